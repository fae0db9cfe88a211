import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

// A stand-in for Supabase Storage at the network edge, close enough to its HTTP API
// that the real supabase-js (storage-js) talks to it: buckets, uploads that refuse a
// duplicate name (as with x-upsert: false), downloads, flat listing with paging, and
// removal by name. Every call needs the service role key.

export interface FakeStorageObject {
  content: Buffer;
  createdAt: Date;
}

export interface FakeSupabaseStorage {
  /** Pass as SUPABASE_URL. */
  readonly url: string;
  readonly serviceRoleKey: string;
  /** bucket → object name → object. */
  readonly buckets: Map<string, Map<string, FakeStorageObject>>;
  /** Uploads received, duplicates included. */
  readonly uploads: number;
  close(): Promise<void>;
}

export async function startFakeSupabaseStorage(): Promise<FakeSupabaseStorage> {
  const serviceRoleKey = `service-${randomUUID()}`;
  const buckets = new Map<string, Map<string, FakeStorageObject>>();
  let uploads = 0;

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => send(res, 500, { statusCode: '500', error: 'internal', message: String(error) }));
  });

  async function handle(req: IncomingMessage, res: ServerResponse) {
    if (req.headers.authorization !== `Bearer ${serviceRoleKey}` || req.headers.apikey !== serviceRoleKey) {
      return send(res, 403, { statusCode: '403', error: 'Unauthorized', message: 'Invalid JWT' });
    }
    const body = await read(req);
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    let match: RegExpExecArray | null;
    if (req.method === 'POST' && path === '/storage/v1/bucket') {
      const { name } = JSON.parse(body.toString('utf8')) as { name: string };
      if (buckets.has(name)) return send(res, 400, { statusCode: '409', error: 'Duplicate', message: 'The resource already exists' });
      buckets.set(name, new Map());
      return send(res, 200, { name });
    }
    if (req.method === 'POST' && (match = /^\/storage\/v1\/object\/list\/([^/]+)$/.exec(path))) {
      const objects = bucketOf(match[1]!);
      if (!objects) return notFound(res, 'Bucket not found');
      const { prefix = '', limit = 100, offset = 0 } = JSON.parse(body.toString('utf8')) as { prefix?: string; limit?: number; offset?: number };
      const names = [...objects.keys()].filter((name) => name.startsWith(prefix)).sort();
      return send(
        res,
        200,
        names.slice(offset, offset + limit).map((name) => {
          const object = objects.get(name)!;
          const at = object.createdAt.toISOString();
          return { name, id: name, created_at: at, updated_at: at, last_accessed_at: at, metadata: { size: object.content.length } };
        }),
      );
    }
    if (req.method === 'DELETE' && (match = /^\/storage\/v1\/object\/([^/]+)$/.exec(path))) {
      const objects = bucketOf(match[1]!);
      if (!objects) return notFound(res, 'Bucket not found');
      const { prefixes } = JSON.parse(body.toString('utf8')) as { prefixes: string[] };
      const removed = prefixes.filter((name) => objects.delete(name));
      return send(res, 200, removed.map((name) => ({ name, bucket_id: match![1] })));
    }
    if ((match = /^\/storage\/v1\/object\/([^/]+)\/(.+)$/.exec(path))) {
      const objects = bucketOf(match[1]!);
      if (!objects) return notFound(res, 'Bucket not found');
      const name = match[2]!;
      if (req.method === 'POST') {
        uploads++;
        if (objects.has(name) && req.headers['x-upsert'] !== 'true') {
          return send(res, 400, { statusCode: '409', error: 'Duplicate', message: 'The resource already exists' });
        }
        objects.set(name, { content: body, createdAt: new Date() });
        return send(res, 200, { Key: `${match[1]}/${name}`, Id: randomUUID() });
      }
      if (req.method === 'GET') {
        const object = objects.get(name);
        if (!object) return notFound(res, 'Object not found');
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': object.content.length }).end(object.content);
        return;
      }
    }
    return notFound(res, `No route for ${req.method} ${path}`);
  }

  const bucketOf = (name: string) => buckets.get(name);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    serviceRoleKey,
    buckets,
    get uploads() {
      return uploads;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function read(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

function send(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function notFound(res: ServerResponse, message: string) {
  send(res, 400, { statusCode: '404', error: 'not_found', message });
}
