// Small driver for the AWS SDK for JavaScript v3, called by ../test_js_sdk.py.
//   node s3ops.mjs <operation> '<json args>'
// Endpoint and keys come from NEBULA_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_REGION. Prints one JSON object on stdout; on an S3 error prints
// {"error": {"name", "status", "message"}} and exits 3.
import fs from "node:fs";
import { pipeline } from "node:stream/promises";
import {
  S3Client,
  CreateBucketCommand,
  PutObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  CopyObjectCommand,
  paginateListObjectsV2,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";

const [op, argJson] = process.argv.slice(2);
const a = JSON.parse(argJson || "{}");

const client = new S3Client({
  endpoint: process.env.NEBULA_ENDPOINT,
  region: process.env.AWS_REGION || "us-east-1",
  forcePathStyle: true,
  maxAttempts: 1,
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID,
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
  },
});

function meta(r) {
  return {
    ETag: r.ETag,
    ContentLength: r.ContentLength,
    ContentType: r.ContentType,
    ContentRange: r.ContentRange,
    Metadata: r.Metadata,
    CacheControl: r.CacheControl,
    ContentDisposition: r.ContentDisposition,
  };
}

const ops = {
  async createBucket() {
    await client.send(new CreateBucketCommand({ Bucket: a.bucket }));
    return { ok: true };
  },
  async put() {
    const Body = a.file ? fs.readFileSync(a.file) : a.text;
    const r = await client.send(
      new PutObjectCommand({
        Bucket: a.bucket,
        Key: a.key,
        Body,
        ContentType: a.contentType,
        Metadata: a.metadata,
        CacheControl: a.cacheControl,
        ContentDisposition: a.contentDisposition,
      }),
    );
    return { ETag: r.ETag };
  },
  async putMany() {
    // several small objects in one process (node start-up dominates otherwise); body = key
    for (const Key of a.keys) {
      await client.send(new PutObjectCommand({ Bucket: a.bucket, Key, Body: Key }));
    }
    return { count: a.keys.length };
  },
  async putStream() {
    // a stream of known length: the SDK sends it aws-chunked with a checksum trailer
    const r = await client.send(
      new PutObjectCommand({
        Bucket: a.bucket,
        Key: a.key,
        Body: fs.createReadStream(a.file),
        ContentLength: fs.statSync(a.file).size,
      }),
    );
    return { ETag: r.ETag };
  },
  async get() {
    const r = await client.send(new GetObjectCommand({ Bucket: a.bucket, Key: a.key, Range: a.range }));
    await pipeline(r.Body, fs.createWriteStream(a.out));
    return meta(r);
  },
  async head() {
    return meta(await client.send(new HeadObjectCommand({ Bucket: a.bucket, Key: a.key })));
  },
  async list() {
    const keys = [];
    const prefixes = [];
    let pages = 0;
    for await (const page of paginateListObjectsV2(
      { client, pageSize: a.pageSize },
      { Bucket: a.bucket, Prefix: a.prefix, Delimiter: a.delimiter },
    )) {
      pages += 1;
      for (const o of page.Contents || []) keys.push(o.Key);
      for (const p of page.CommonPrefixes || []) prefixes.push(p.Prefix);
    }
    return { keys, prefixes, pages };
  },
  async upload() {
    const parts = [];
    const up = new Upload({
      client,
      params: { Bucket: a.bucket, Key: a.key, Body: fs.createReadStream(a.file), ContentType: a.contentType },
      partSize: a.partSize || 5 * 1024 * 1024,
      queueSize: a.queueSize || 4,
      leavePartsOnError: false,
    });
    up.on("httpUploadProgress", (p) => parts.push(p.part));
    const r = await up.done();
    return { ETag: r.ETag, Key: r.Key, parts: new Set(parts).size };
  },
  async presignGet() {
    const url = await getSignedUrl(client, new GetObjectCommand({ Bucket: a.bucket, Key: a.key }), {
      expiresIn: a.expires || 600,
    });
    return { url };
  },
  async copy() {
    const r = await client.send(
      new CopyObjectCommand({ Bucket: a.bucket, Key: a.key, CopySource: `${a.bucket}/${encodeURIComponent(a.source)}` }),
    );
    return { ETag: r.CopyObjectResult?.ETag };
  },
  async delete() {
    await client.send(new DeleteObjectCommand({ Bucket: a.bucket, Key: a.key }));
    return { ok: true };
  },
  async deleteMany() {
    const r = await client.send(
      new DeleteObjectsCommand({ Bucket: a.bucket, Delete: { Objects: a.keys.map((Key) => ({ Key })), Quiet: !!a.quiet } }),
    );
    return { Deleted: (r.Deleted || []).map((d) => d.Key), Errors: r.Errors || [] };
  },
};

try {
  if (!ops[op]) throw new Error(`unknown operation ${op}`);
  const out = await ops[op]();
  process.stdout.write(JSON.stringify(out) + "\n");
} catch (e) {
  process.stdout.write(
    JSON.stringify({ error: { name: e.name, status: e.$metadata?.httpStatusCode, message: String(e.message) } }) + "\n",
  );
  process.exit(3);
}
