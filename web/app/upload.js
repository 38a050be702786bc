// The upload queue: small files in one PUT, larger ones as multipart uploads with parallel
// parts. Parts are Blob slices handed to XMLHttpRequest (for upload progress), so the browser
// streams them from disk and a file of any size never sits in memory. A failed part is retried;
// cancelling aborts the requests in flight and the multipart upload.

const MIB = 1024 * 1024;
/** Files up to this size go in one PUT. */
const SINGLE_PUT_MAX = 8 * MIB;
/** Parts of this size, larger when a file would need more than 10,000 (S3's limit). */
const PART_SIZE = 8 * MIB;
/** Parts in flight per file, and files uploading at once. */
const PART_CONCURRENCY = 4;
const FILE_CONCURRENCY = 2;
const PART_ATTEMPTS = 4;

class Cancelled extends Error {
  constructor() {
    super('cancelled');
    this.name = 'AbortError';
  }
}

function partSize(size) {
  return Math.max(PART_SIZE, Math.ceil(size / 10000 / MIB) * MIB);
}

/** One file to upload. `state`: queued, uploading, done, failed, cancelled. */
class UploadItem {
  constructor(queue, file, bucket, key) {
    this.queue = queue;
    this.file = file;
    this.bucket = bucket;
    this.key = key;
    this.size = file.size;
    this.state = 'queued';
    this.error = '';
    this.done = 0; // bytes of finished parts
    this.inFlight = new Map(); // part number -> bytes sent so far
    this.xhrs = new Set();
    this.uploadId = null;
    this.parts = 0;
    this.retries = 0;
  }

  get loaded() {
    let n = this.done;
    for (const v of this.inFlight.values()) n += v;
    return Math.min(n, this.size);
  }

  cancel() {
    if (this.state === 'done' || this.state === 'failed' || this.state === 'cancelled') return;
    const wasRunning = this.state === 'uploading';
    this.state = 'cancelled';
    for (const x of this.xhrs) x.abort();
    if (!wasRunning) this.queue.changed(this);
  }

  /** Sends one signed PUT with `blob` as the body; resolves to the ETag. */
  async put(params, blob, part) {
    const gw = this.queue.gateway;
    const signed = await gw.signPut(this.bucket, this.key, params, part ? null : this.file.type || null);
    if (this.state !== 'uploading') throw new Cancelled();
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', signed.url);
      for (const [k, v] of signed.headers) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => {
        this.inFlight.set(part, e.loaded);
        this.queue.changed(this);
      };
      xhr.onload = () => {
        this.xhrs.delete(xhr);
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve(xhr.getResponseHeader('ETag'));
        } else {
          const m = /<Message>([^<]*)<\/Message>/.exec(xhr.responseText || '');
          const err = new Error(m ? m[1] : `HTTP ${xhr.status}`);
          err.status = xhr.status;
          reject(err);
        }
      };
      xhr.onerror = () => {
        this.xhrs.delete(xhr);
        reject(new Error('network error'));
      };
      xhr.onabort = () => {
        this.xhrs.delete(xhr);
        reject(new Cancelled());
      };
      this.xhrs.add(xhr);
      xhr.send(blob);
    });
  }

  /** One part with retries (a broken connection, a 5xx: try again after a pause). */
  async putPart(n, blob) {
    for (let attempt = 1; ; attempt++) {
      try {
        const etag = await this.put({ partNumber: String(n), uploadId: this.uploadId }, blob, n);
        this.inFlight.delete(n);
        this.done += blob.size;
        this.queue.changed(this);
        return etag;
      } catch (e) {
        this.inFlight.delete(n);
        if (e instanceof Cancelled || this.state === 'cancelled') throw new Cancelled();
        const retryable = !e.status || e.status >= 500 || e.status === 408 || e.status === 429;
        if (!retryable || attempt >= PART_ATTEMPTS) throw e;
        this.retries++;
        this.queue.changed(this);
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
      }
    }
  }

  async run() {
    const gw = this.queue.gateway;
    this.state = 'uploading';
    this.queue.changed(this);
    try {
      if (this.size <= SINGLE_PUT_MAX) {
        await this.put({}, this.file, 0);
        this.done = this.size;
      } else {
        this.uploadId = await gw.createMultipart(this.bucket, this.key, this.file.type || null);
        const ps = partSize(this.size);
        this.parts = Math.ceil(this.size / ps);
        const etags = new Array(this.parts);
        let next = 0;
        const worker = async () => {
          while (next < this.parts && this.state === 'uploading') {
            const i = next++;
            const blob = this.file.slice(i * ps, Math.min(this.size, (i + 1) * ps));
            etags[i] = await this.putPart(i + 1, blob);
          }
        };
        await Promise.all(Array.from({ length: Math.min(PART_CONCURRENCY, this.parts) }, worker));
        if (this.state === 'cancelled') throw new Cancelled();
        await gw.completeMultipart(this.bucket, this.key, this.uploadId, etags);
      }
      this.state = 'done';
    } catch (e) {
      // Stop the other parts of this file, then drop what the gateway staged.
      const cancelled = e instanceof Cancelled || this.state === 'cancelled';
      this.state = cancelled ? 'cancelled' : 'failed';
      this.error = cancelled ? '' : e.message;
      for (const x of this.xhrs) x.abort();
      if (this.uploadId) await gw.abortMultipart(this.bucket, this.key, this.uploadId).catch(() => {});
    }
    this.queue.changed(this);
  }
}

/** Uploads run FILE_CONCURRENCY at a time; `onChange(item)` after every change. */
export class UploadQueue {
  constructor(gateway, onChange) {
    this.gateway = gateway;
    this.onChange = onChange;
    this.items = [];
    this.running = 0;
  }

  /** Queues `files` ([{file, bucket, key}]). */
  add(entries) {
    const added = entries.map(({ file, bucket, key }) => new UploadItem(this, file, bucket, key));
    this.items.push(...added);
    for (const it of added) this.onChange(it);
    this.pump();
    return added;
  }

  pump() {
    while (this.running < FILE_CONCURRENCY) {
      const next = this.items.find((i) => i.state === 'queued');
      if (!next) break;
      this.running++;
      next.run().finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  changed(item) {
    this.onChange(item);
  }

  clearFinished() {
    this.items = this.items.filter((i) => i.state === 'queued' || i.state === 'uploading');
  }

  totals() {
    let size = 0;
    let loaded = 0;
    const counts = { queued: 0, uploading: 0, done: 0, failed: 0, cancelled: 0 };
    for (const i of this.items) {
      counts[i.state]++;
      if (i.state === 'cancelled') continue;
      size += i.size;
      loaded += i.state === 'done' ? i.size : i.loaded;
    }
    return { size, loaded, counts };
  }
}

/** Files of a drop (folders walked recursively), as [{file, path}] with relative paths. */
export async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items]
    .map((it) => (it.webkitGetAsEntry ? it.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (entries.length === 0) return [...dataTransfer.files].map((f) => ({ file: f, path: f.name }));
  const out = [];
  const walk = async (entry, dir) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({ file, path: dir + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      // readEntries answers in batches until it returns an empty one.
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (batch.length === 0) break;
        for (const e of batch) await walk(e, `${dir}${entry.name}/`);
      }
    }
  };
  for (const e of entries) await walk(e, '');
  return out;
}
