// The browser's own S3 and JSON-API client: every request is signed here with SigV4
// (aws4fetch, WebCrypto); headers for API calls, the query for media URLs and share links.

import { AwsClient } from './vendor/aws4fetch.esm.mjs';

/** An error answered by the gateway (S3 XML or API JSON), with a sentence for people. */
export class GatewayError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/** Encodes a key for the path: every segment percent-encoded, slashes kept. */
export function encodeKey(key) {
  return key
    .split('/')
    .map((s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase()))
    .join('/');
}

function objectPath(bucket, key) {
  return key == null ? `/${encodeURIComponent(bucket)}` : `/${encodeURIComponent(bucket)}/${encodeKey(key)}`;
}

const FRIENDLY = {
  InvalidAccessKeyId: 'Unknown access key: check the access key.',
  SignatureDoesNotMatch: 'Wrong secret key for this access key.',
  AccessDenied: 'Access denied for these keys.',
  AuthorizationHeaderMalformed: 'The region does not match the gateway\'s.',
  RequestTimeTooSkewed: 'This device\'s clock is too far from the gateway\'s.',
  BucketAlreadyExists: 'A bucket with that name already exists.',
  BucketAlreadyOwnedByYou: 'You already have a bucket with that name.',
  InvalidBucketName: 'That is not a valid bucket name.',
  NoSuchBucket: 'That bucket does not exist.',
  NoSuchKey: 'That file does not exist any more.',
  BucketNotEmpty: 'The bucket is not empty.',
};

async function errorFrom(res) {
  const text = await res.text().catch(() => '');
  let code = '';
  let message = '';
  if (text.startsWith('{')) {
    try {
      const j = JSON.parse(text);
      code = j.error?.code || '';
      message = j.error?.message || '';
    } catch { /* not JSON after all */ }
  } else if (text.includes('<Error>')) {
    const doc = new DOMParser().parseFromString(text, 'application/xml');
    code = doc.querySelector('Code')?.textContent || '';
    message = doc.querySelector('Message')?.textContent || '';
  }
  const friendly = FRIENDLY[code];
  return new GatewayError(res.status, code, friendly ? `${friendly} (${code})` : message || code || `HTTP ${res.status} ${res.statusText}`);
}

function xml(text) {
  return new DOMParser().parseFromString(text, 'application/xml');
}

function childText(el, name) {
  for (const c of el.children) if (c.localName === name) return c.textContent;
  return null;
}

function children(el, name) {
  return [...el.children].filter((c) => c.localName === name);
}

/** The signed client for one signed-in session. */
export class Gateway {
  constructor({ accessKey, secretKey, region }) {
    this.accessKey = accessKey;
    this.region = region;
    // retries: 0: the page decides what to retry (upload parts), nothing else is repeated.
    this.aws = new AwsClient({ accessKeyId: accessKey, secretAccessKey: secretKey, service: 's3', region, retries: 0 });
  }

  url(path, params) {
    const u = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) if (v != null) u.searchParams.set(k, v);
    return u;
  }

  /** A header-signed Request (for fetch, or whose headers an XMLHttpRequest copies). */
  sign(method, path, { params, headers, body } = {}) {
    return this.aws.sign(this.url(path, params).toString(), { method, headers, body });
  }

  async request(method, path, opts = {}) {
    let res;
    try {
      res = await fetch(await this.sign(method, path, opts), { signal: opts.signal });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new GatewayError(0, 'NetworkError', `Cannot reach the gateway: ${e.message}`);
    }
    if (!res.ok) throw await errorFrom(res);
    return res;
  }

  /** A presigned GET URL (query-signed), valid for `expires` seconds (at most 7 days). */
  async presign(bucket, key, { expires = 3600, params } = {}) {
    const u = this.url(objectPath(bucket, key), params);
    u.searchParams.set('X-Amz-Expires', String(Math.min(expires, 604800)));
    const req = await this.aws.sign(u.toString(), { method: 'GET', aws: { signQuery: true } });
    return req.url;
  }

  // -- S3 ----------------------------------------------------------------------------------

  async listBuckets() {
    const doc = xml(await (await this.request('GET', '/')).text());
    return [...doc.getElementsByTagName('Bucket')].map((b) => ({
      name: childText(b, 'Name'),
      created: childText(b, 'CreationDate'),
    }));
  }

  createBucket(name) {
    return this.request('PUT', objectPath(name));
  }

  /** One folder level: sub-folders and objects under `prefix` (all pages). */
  async listFolder(bucket, prefix) {
    const folders = [];
    const files = [];
    let token = null;
    do {
      const params = { 'list-type': '2', delimiter: '/', prefix, 'max-keys': '1000' };
      if (token) params['continuation-token'] = token;
      const doc = xml(await (await this.request('GET', objectPath(bucket), { params })).text());
      const root = doc.documentElement;
      for (const p of children(root, 'CommonPrefixes')) folders.push(childText(p, 'Prefix'));
      for (const c of children(root, 'Contents')) {
        const key = childText(c, 'Key');
        if (key === prefix) continue; // the folder's own marker
        files.push({
          key,
          size: Number(childText(c, 'Size')),
          modified: childText(c, 'LastModified'),
          etag: childText(c, 'ETag'),
        });
      }
      token = childText(root, 'IsTruncated') === 'true' ? childText(root, 'NextContinuationToken') : null;
    } while (token);
    return { folders, files };
  }

  /** Deletes up to 1000 keys with one DeleteObjects; returns the keys that failed. */
  async deleteObjects(bucket, keys) {
    const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    const body = '<Delete><Quiet>true</Quiet>'
      + keys.map((k) => `<Object><Key>${esc(k)}</Key></Object>`).join('')
      + '</Delete>';
    const res = await this.request('POST', objectPath(bucket), {
      params: { delete: '' },
      headers: { 'Content-Type': 'application/xml' },
      body,
    });
    const doc = xml(await res.text());
    return [...doc.getElementsByTagName('Error')].map((e) => ({
      key: childText(e, 'Key'),
      message: childText(e, 'Message') || childText(e, 'Code'),
    }));
  }

  // -- multipart (the upload queue drives these) -------------------------------------------

  async createMultipart(bucket, key, contentType) {
    const res = await this.request('POST', objectPath(bucket, key), {
      params: { uploads: '' },
      headers: contentType ? { 'Content-Type': contentType } : {},
    });
    return xml(await res.text()).getElementsByTagName('UploadId')[0].textContent;
  }

  /** The signed request for one part or a whole small object, for an XMLHttpRequest to send. */
  signPut(bucket, key, params, contentType) {
    const headers = { 'X-Amz-Content-Sha256': 'UNSIGNED-PAYLOAD' };
    if (contentType) headers['Content-Type'] = contentType;
    return this.sign('PUT', objectPath(bucket, key), { params, headers });
  }

  async completeMultipart(bucket, key, uploadId, etags) {
    const body = '<CompleteMultipartUpload>'
      + etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`).join('')
      + '</CompleteMultipartUpload>';
    const res = await this.request('POST', objectPath(bucket, key), {
      params: { uploadId },
      headers: { 'Content-Type': 'application/xml' },
      body,
    });
    // CompleteMultipartUpload can answer 200 with an error in the body.
    const doc = xml(await res.text());
    if (doc.documentElement.localName === 'Error') {
      throw new GatewayError(200, childText(doc.documentElement, 'Code'), childText(doc.documentElement, 'Message'));
    }
  }

  abortMultipart(bucket, key, uploadId) {
    return this.request('DELETE', objectPath(bucket, key), { params: { uploadId } });
  }

  // -- JSON API ----------------------------------------------------------------------------

  async api(method, path, body) {
    const opts = {};
    if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers = { 'Content-Type': 'application/json' };
    }
    return (await this.request(method, `/_nebula/v1/${path}`, opts)).json();
  }

  /** Catalog entries (media facts) of the objects under `prefix`, by key; empty without a catalog. */
  async catalog(bucket, prefix, maxPages = 5) {
    const byKey = new Map();
    let cursor = null;
    for (let page = 0; page < maxPages; page++) {
      const q = new URLSearchParams({ bucket, prefix, limit: '1000' });
      if (cursor) q.set('cursor', cursor);
      let res;
      try {
        res = await this.api('GET', `files?${q}`);
      } catch (e) {
        if (e.status === 503 || e.status === 404) break; // no catalog: listings still work
        throw e;
      }
      for (const it of res.items) byKey.set(it.key, it);
      cursor = res.next_cursor;
      if (!cursor) break;
    }
    return byKey;
  }
}
