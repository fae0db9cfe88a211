import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type BlobStore, sha256Of } from '../src/artifacts/blob-store.js';
import { fsBlobStore } from '../src/artifacts/fs-blob-store.js';
import { type ArchiveSlots, outputHandlers } from '../src/artifacts/http-handlers.js';
import { localBlobCache } from '../src/artifacts/local-cache.js';
import { postgresBlobStore } from '../src/artifacts/postgres-blob-store.js';
import { supabaseBlobStore } from '../src/artifacts/supabase-blob-store.js';
import { manifestStore } from '../src/artifacts/manifest-store.js';
import { type CapabilityKind, loadUrlKey, signCapability } from '../src/artifacts/signed-urls.js';
import { artifactBlobs, generationFiles, generations } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { createLogger } from '../src/observability/logger.js';
import { createMetrics } from '../src/observability/metrics.js';
import { type TestDatabase, createTestDatabase, databaseKind } from './support/db.js';
import { tempDir } from './support/generation-helpers.js';
import { LogCapture } from './support/log-capture.js';
import { refusalsIn, refusedOnly } from './support/metrics.js';
import { unzip } from './support/archives.js';
import { rawGet } from './support/raw-http.js';
import { insertGenerationRow } from './support/rows.js';

// The output handlers on their own, over a blob store the test controls: what a data
// directory's name, clients that go away, and many first requests at once do to them.

const MANIFEST_READ = /from "generation_artifacts" where .*"kind" = /;
const SLICE_READ = /\bsubstring\("content" from \$\d+ for \$\d+\)/;

let database: TestDatabase;
let failManifestRead = false;
let manifestReads = 0;
/** Statements that read a slice of a blob (the postgres store's `readSlices`). */
let sliceReads = 0;
let key: Awaited<ReturnType<typeof loadUrlKey>>;
let data: Awaited<ReturnType<typeof tempDir>>;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  database = await createTestDatabase({
    onQuery: (query) => {
      if (SLICE_READ.test(query)) sliceReads++;
      if (!MANIFEST_READ.test(query)) return;
      manifestReads++;
      if (failManifestRead) throw new Error('the manifest read failed');
    },
  });
  key = await loadUrlKey(database.db);
  data = await tempDir('outputs-serving');
});
afterEach(async () => {
  failManifestRead = false;
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(async () => {
  await database?.close();
  await data?.remove();
});

/** A resolvable promise. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

/** Items as they come, taken in order by whoever waits for them. */
function queue<T>() {
  const items: T[] = [];
  const takers: ((item: T) => void)[] = [];
  return {
    push(item: T) {
      const taker = takers.shift();
      if (taker) taker(item);
      else items.push(item);
    },
    next: () => (items.length > 0 ? Promise.resolve(items.shift()!) : new Promise<T>((resolve) => takers.push(resolve))),
  };
}

interface HeldRead {
  sha256: string;
  release(): void;
  fail(error: Error): void;
}

/**
 * Blobs in memory as a remote store (postgres, Supabase) keeps them, with local copies in
 * `cacheDir`; every read waits until the test releases it (`held`), and `inFlight` counts them.
 */
function remoteStore(cacheDir: string, blobs: Map<string, Buffer>, options: { onWaiting?: (waiting: number) => void; waitingPerGeneration?: number } = {}) {
  const held = queue<HeldRead>();
  const stats = { inFlight: 0, maxInFlight: 0, started: 0, order: [] as string[] };
  const cache = localBlobCache(cacheDir, { remoteReads: 2, ...options });
  const read = async (sha256: string) => {
    stats.inFlight++;
    stats.started++;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    stats.order.push(sha256);
    const turn = deferred();
    held.push({ sha256, release: () => turn.resolve(), fail: (error) => turn.reject(error) });
    try {
      await turn.promise;
    } finally {
      stats.inFlight--;
    }
    return blobs.get(sha256);
  };
  const store: BlobStore = {
    kind: 'postgres',
    putMany: async () => [],
    read,
    localPath: (sha256, generationId) =>
      cache.path(
        sha256,
        async () => {
          const content = await read(sha256);
          return content && (async function* () {
            yield content;
          })();
        },
        generationId,
      ),
    // eslint-disable-next-line require-yield
    async *list() {
      return;
    },
    remove: async () => 0,
  };
  return { store, held, stats };
}

/** A generation with these bundle files (BUNDLE) and sources (SOURCE, in the store), its blobs returned by sha256. */
async function seedGeneration(bundle: Record<string, string>, sources: Record<string, string> = {}, status: 'RUNNING' | 'SUCCEEDED' = 'SUCCEEDED') {
  const blobs = new Map<string, Buffer>();
  const entries = (kind: 'BUNDLE' | 'SOURCE', files: Record<string, string>) =>
    Object.entries(files).map(([path, text]) => {
      const content = Buffer.from(text);
      const sha256 = sha256Of(content);
      blobs.set(sha256, content);
      return { kind, path, sha256, size: content.length };
    });
  const generationId = await serviceScope(database.db).run(async (tx) => {
    const { id } = (await insertGenerationRow(tx, 'Serving test')).generation;
    // Outputs are stored as a generation succeeds; a running one has its files.
    await tx.update(generations).set({ status: 'RUNNING', phase: 'BUILDING' }).where(eq(generations.id, id));
    if (status === 'SUCCEEDED') await tx.update(generations).set({ status, phase: 'DONE', finishedAt: new Date() }).where(eq(generations.id, id));
    const rows = [...entries('BUNDLE', bundle), ...entries('SOURCE', sources)].map((row) => ({ ...row, generationId: id }));
    if (rows.length > 0) await manifestStore.insert(tx, rows);
    const files = entries('SOURCE', sources).map(({ path, sha256, size }) => ({ generationId: id, path, sha256, size, content: sources[path]! }));
    if (files.length > 0) await tx.insert(generationFiles).values(files);
    return id;
  });
  return { generationId, blobs, shaOf: (text: string) => sha256Of(text) };
}

/** Every line the handlers log, with a wait for the first that matches. */
class WatchedLog extends LogCapture {
  private watchers: { match: (record: Record<string, unknown>) => boolean; found: (record: Record<string, unknown>) => void }[] = [];

  override _write(chunk: Buffer, encoding: BufferEncoding, done: () => void) {
    super._write(chunk, encoding, () => {});
    this.check();
    done();
  }

  private check() {
    const records = this.records();
    this.watchers = this.watchers.filter((watcher) => {
      const record = records.find(watcher.match);
      if (record) watcher.found(record);
      return !record;
    });
  }

  first(match: (record: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    return new Promise((found) => {
      this.watchers.push({ match, found });
      this.check();
    });
  }
}

/**
 * The handlers behind a server of the test's own, which answers what they leave to the API with
 * `API`. With `together`, requests are routed only once that many have arrived, all in one go:
 * as when a page's assets are asked for at once.
 */
async function serve(store: BlobStore, options: { together?: number; previewOrigin?: string; archivesAtOnce?: ArchiveSlots } = {}) {
  const logs = new WatchedLog();
  const metrics = createMetrics({ defaultMetrics: false });
  const handlers = outputHandlers({
    key,
    store,
    db: database.db,
    logger: createLogger('trace', logs),
    metrics,
    previewOrigin: options.previewOrigin,
    archivesAtOnce: options.archivesAtOnce,
  });
  let arrived: [IncomingMessage, ServerResponse][] = [];
  const server: Server = createServer((req, res) => {
    if (!options.together) {
      if (!handlers.route(req, res)) res.writeHead(200).end('API');
      return;
    }
    arrived.push([req, res]);
    if (arrived.length < options.together) return;
    const all = arrived;
    arrived = [];
    for (const [request, response] of all) handlers.route(request, response);
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((closed) => server.close(closed));
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const path = (kind: CapabilityKind, generationId: string, rest: string) =>
    `/${kind === 'preview' ? 'preview' : 'archive'}/${signCapability(key, { kind, generationId, expiresAt: new Date(Date.now() + 600_000) })}/${rest}`;
  const url = (kind: CapabilityKind, generationId: string, rest: string) => `${base}${path(kind, generationId, rest)}`;
  return { logs, base, path, url, metrics };
}

const bundleOf = (count: number, label: string) =>
  Object.fromEntries([
    ['index.html', `<!doctype html><html><head></head><body>${label}</body></html>`],
    ...Array.from({ length: count }, (_, i) => [`assets/part-${i}.js`, `console.log(${JSON.stringify(`${label} ${i}`)});\n`.repeat(50 + i)]),
  ]);

describe(`output handlers (${databaseKind})`, () => {
  it('serves a preview asset from a data directory whose name holds a percent escape', async () => {
    const dataDir = join(data.path, 'kiln%41data');
    const bundle = bundleOf(1, 'percent');
    const { generationId, blobs, shaOf } = await seedGeneration(bundle);

    // The remote stores' local copies are under DATA_DIR…
    const remote = remoteStore(join(dataDir, 'artifact-cache'), blobs);
    const fromCache = await serve(remote.store);
    const answer = fetch(fromCache.url('preview', generationId, 'assets/part-0.js'));
    (await remote.held.next()).release();
    const asset = await answer;
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(await asset.text()).toBe(bundle['assets/part-0.js']);

    // …and so are the embedded store's blobs.
    const fs = fsBlobStore(join(dataDir, 'artifacts'));
    await fs.putMany([...blobs].map(([sha256, content]) => ({ sha256, content })));
    const fromFs = await serve(fs);
    const again = await fetch(fromFs.url('preview', generationId, 'assets/part-0.js'));
    expect(again.status).toBe(200);
    expect(again.headers.get('etag')).toBe(`"${shaOf(bundle['assets/part-0.js']!)}"`);
    expect(await again.text()).toBe(bundle['assets/part-0.js']);
    expect((await fetch(fromFs.url('preview', generationId, ''))).status).toBe(200);
  });

  it('ignores If-Unmodified-Since (a preview has no modification date to compare) and answers If-None-Match: * with 304', async () => {
    const bundle = bundleOf(1, 'conditional');
    const { generationId, blobs, shaOf } = await seedGeneration(bundle);
    const fs = fsBlobStore(join(data.path, 'conditional'));
    await fs.putMany([...blobs].map(([sha256, content]) => ({ sha256, content })));
    const { base, path } = await serve(fs);
    const asset = path('preview', generationId, 'assets/part-0.js');
    const longAgo = { 'if-unmodified-since': 'Thu, 01 Jan 1970 00:00:00 GMT' };

    const whole = await rawGet(base, asset, longAgo);
    expect(whole.status).toBe(200);
    expect(whole.body.toString()).toBe(bundle['assets/part-0.js']);
    const part = await rawGet(base, asset, { ...longAgo, range: 'bytes=0-9' });
    expect(part.status).toBe(206);
    expect(part.body.toString()).toBe(bundle['assets/part-0.js']!.slice(0, 10));
    // The ETag's preconditions still hold.
    expect((await rawGet(base, asset, { ...longAgo, 'if-match': '"other"' })).status).toBe(412);
    expect((await rawGet(base, asset, { ...longAgo, 'if-match': `"${shaOf(bundle['assets/part-0.js']!)}"` })).status).toBe(200);

    // The page exists, so `*` matches it, as it matches an asset.
    for (const rest of ['', 'assets/part-0.js']) {
      expect((await rawGet(base, path('preview', generationId, rest), { 'if-none-match': '*' })).status, rest).toBe(304);
    }
  });

  it("answers a preview page's own CORS preflight (its origin is opaque, so fetch() with a JSON content type asks first) for its capability only", async () => {
    const bundle = bundleOf(1, 'preflight');
    const { generationId, blobs } = await seedGeneration(bundle);
    const fs = fsBlobStore(join(data.path, 'preflight'));
    await fs.putMany([...blobs].map(([sha256, content]) => ({ sha256, content })));
    const { url } = await serve(fs);
    const preflight = (target: string) =>
      fetch(target, { method: 'OPTIONS', headers: { origin: 'null', 'access-control-request-method': 'GET', 'access-control-request-headers': 'content-type,x-app' } });

    const answer = await preflight(url('preview', generationId, 'assets/part-0.js'));
    expect(answer.status).toBe(204);
    expect(Object.fromEntries(['access-control-allow-origin', 'access-control-allow-methods', 'access-control-allow-headers'].map((name) => [name, answer.headers.get(name)]))).toEqual({
      'access-control-allow-origin': '*',
      'access-control-allow-methods': 'GET, HEAD',
      'access-control-allow-headers': '*',
    });
    // A forged capability gets no more than a GET would; an OPTIONS that is no preflight is still refused.
    expect((await preflight(url('preview', generationId, 'x').replace(/\/preview\/[^/]+/, (path) => `${path.slice(0, -4)}AAAA`))).status).toBe(403);
    expect((await fetch(url('preview', generationId, ''), { method: 'OPTIONS' })).status).toBe(405);
  });

  it('redirects a folder named without its slash to the folder, query kept, as a static host does', async () => {
    const bundle = {
      ...bundleOf(0, 'root'),
      'docs/index.html': '<!doctype html><html><head></head><body>docs</body></html>',
      'docs/guide.css': 'body { color: green; }',
    };
    const { generationId, blobs } = await seedGeneration(bundle);
    const fs = fsBlobStore(join(data.path, 'folders'));
    await fs.putMany([...blobs].map(([sha256, content]) => ({ sha256, content })));
    const { base, path } = await serve(fs);
    const root = path('preview', generationId, '');

    for (const [rest, location] of [
      ['docs', `${root}docs/`],
      ['docs?tab=2&q=a%20b', `${root}docs/?tab=2&q=a%20b`],
    ] as const) {
      const moved = await rawGet(base, `${root}${rest}`);
      expect(moved.status, rest).toBe(308);
      expect(moved.headers.location, rest).toBe(location);
      expect(moved.headers['content-security-policy'], rest).toBe('sandbox allow-scripts allow-forms allow-popups allow-modals');
    }
    // Where the redirect leads: the folder's page, whose relative URLs resolve in the folder.
    const page = await rawGet(base, `${root}docs/`);
    expect([page.status, page.body.toString()]).toEqual([200, bundle['docs/index.html']]);
    expect((await rawGet(base, new URL('guide.css', `${base}${root}docs/`).pathname)).body.toString()).toBe(bundle['docs/guide.css']);
    // A client-side route that is no folder of the bundle still gets the app's page.
    const route = await rawGet(base, `${root}settings`);
    expect([route.status, route.body.toString()]).toEqual([200, bundle['index.html']!.replace('<head>', `<head><base href="${root}">`)]);
  });

  it('with PREVIEW_ORIGIN, knows that origin in a Host with its default port, in another case or with the root’s trailing dot', async () => {
    const bundle = bundleOf(1, 'origin');
    const { generationId, blobs } = await seedGeneration(bundle);
    const fs = fsBlobStore(join(data.path, 'origin'));
    await fs.putMany([...blobs].map(([sha256, content]) => ({ sha256, content })));
    const { base, path } = await serve(fs, { previewOrigin: 'https://preview.example.com' });
    const page = path('preview', generationId, 'assets/part-0.js');

    for (const host of ['preview.example.com', 'preview.example.com:443', 'Preview.EXAMPLE.com:443', 'preview.example.com.', 'preview.example.com.:443']) {
      const served = await rawGet(base, page, { host });
      expect(served.status, host).toBe(200);
      expect(served.body.toString()).toBe(bundle['assets/part-0.js']);
      expect((await rawGet(base, '/graphql', { host })).status, host).toBe(404);
    }
    // Another port, or another name, is not the preview origin: the API's, which serves no preview.
    for (const host of ['preview.example.com:8443', 'kiln.example.com', 'preview.example.com@kiln.example.com']) {
      expect((await rawGet(base, page, { host })).status, host).toBe(404);
      expect((await rawGet(base, '/graphql', { host })).body.toString(), host).toBe('API');
    }
  });

  it('reads a fresh preview’s manifest once for its first requests at once, and again after a failed read', async () => {
    const bundle = bundleOf(5, 'manifest');
    const { generationId, blobs } = await seedGeneration(bundle);
    const dir = join(data.path, 'manifest');
    const fs = fsBlobStore(dir);
    await fs.putMany([...blobs].map(([sha256, content]) => ({ sha256, content })));

    // A failed read answers 500 and is not kept.
    failManifestRead = true;
    const failing = await serve(fs);
    expect((await fetch(failing.url('preview', generationId, 'assets/part-0.js'))).status).toBe(500);
    failManifestRead = false;
    expect((await fetch(failing.url('preview', generationId, 'assets/part-0.js'))).status).toBe(200);

    // A server of its own, so nothing is cached yet: the page and its five scripts asked for at once.
    const paths = ['', ...Array.from({ length: 5 }, (_, i) => `assets/part-${i}.js`)];
    const { url } = await serve(fs, { together: paths.length });
    manifestReads = 0;
    const answers = await Promise.all(paths.map((path) => fetch(url('preview', generationId, path))));
    expect(answers.map((answer) => answer.status)).toEqual(paths.map(() => 200));
    const texts = await Promise.all(answers.map((answer) => answer.text()));
    expect(texts.slice(1)).toEqual(paths.slice(1).map((path) => bundle[path]));
    expect(manifestReads).toBe(1);
  });

  it('downloads at most two fresh blobs from the remote store at once, the others in their turn, each served whole', async () => {
    const bundle = bundleOf(5, 'turns');
    const { generationId, blobs } = await seedGeneration(bundle);
    let waiting = 0;
    const threeWaiting = deferred();
    const remote = remoteStore(join(data.path, 'turns-cache'), blobs, {
      onWaiting: (count) => {
        waiting = count;
        if (count === 3) threeWaiting.resolve();
      },
    });
    const paths = Array.from({ length: 5 }, (_, i) => `assets/part-${i}.js`);
    const { url } = await serve(remote.store, { together: paths.length });
    const answers = Promise.all(
      paths.map(async (path) => {
        const answer = await fetch(url('preview', generationId, path));
        return { status: answer.status, text: await answer.text() };
      }),
    );
    // The reads in the order they begin, taken by one reader.
    const reads = Array.from({ length: 5 }, () => deferred<HeldRead>());
    const allStarted = (async () => {
      for (const read of reads) read.resolve(await remote.held.next());
    })();
    // Nothing is released until all five downloads have begun or the three over the bound wait.
    await Promise.race([threeWaiting.promise, allStarted]);
    expect(remote.stats.maxInFlight).toBe(2);
    expect(waiting).toBe(3);
    // Each released download gives its turn to the next in line.
    for (const read of reads) {
      const held = await read.promise;
      expect(remote.stats.inFlight).toBeLessThanOrEqual(2);
      held.release();
    }
    await allStarted;
    expect(await answers).toEqual(paths.map((path) => ({ status: 200, text: bundle[path] })));
    expect(remote.stats.maxInFlight).toBe(2);
    expect(remote.stats.started).toBe(5);
    expect(new Set(remote.stats.order)).toEqual(new Set(paths.map((path) => sha256Of(bundle[path]!))));
  });

  it('serves another preview’s first file before a preview’s many, and asks a preview with too many waiting to come back', async () => {
    const bundle = bundleOf(4, 'many');
    const many = await seedGeneration(bundle);
    const first = await seedGeneration(bundleOf(1, 'first'));
    const bothWaiting = deferred();
    const remote = remoteStore(join(data.path, 'fair-cache'), new Map([...many.blobs, ...first.blobs]), {
      waitingPerGeneration: 1,
      onWaiting: (count) => {
        if (count === 2) bothWaiting.resolve();
      },
    });
    const { url, metrics } = await serve(remote.store);
    const get = async (generationId: string, path: string) => {
      const answer = await fetch(url('preview', generationId, path));
      return { status: answer.status, retryAfter: answer.headers.get('retry-after'), text: await answer.text() };
    };
    // One preview asks for four files: two download, one waits, and one is told to come back.
    const flood = Promise.all([0, 1, 2, 3].map((i) => get(many.generationId, `assets/part-${i}.js`)));
    const reads = [await remote.held.next(), await remote.held.next()];
    // The other preview's file waits too, and has the next turn.
    const other = get(first.generationId, 'assets/part-0.js');
    await bothWaiting.promise;
    reads[0]!.release();
    const next = await remote.held.next();
    expect(next.sha256).toBe(first.shaOf(bundleOf(1, 'first')['assets/part-0.js']!));
    next.release();
    expect((await other).status).toBe(200);
    reads[1]!.release();
    (await remote.held.next()).release();

    const answers = await flood;
    expect(answers.map((answer) => answer.status).sort()).toEqual([200, 200, 200, 503]);
    expect(answers.find((answer) => answer.status === 503)).toEqual({ status: 503, retryAfter: '1', text: 'Busy fetching this preview; try again shortly.' });
    expect(refusalsIn(await metrics.registry.metrics())).toEqual(refusedOnly({ preview_downloads: 1 }));
    for (const answer of answers.filter((served) => served.status === 200)) expect(Object.values(bundle)).toContain(answer.text);
  });

  it('refuses to archive a generation still running (a fix round may change its files midway) with 409, and archives it once it has ended', async () => {
    const { generationId, blobs } = await seedGeneration({}, { 'lib/main.dart': 'void main() {}\n' }, 'RUNNING');
    const remote = remoteStore(join(data.path, 'running-archive'), blobs);
    const { url } = await serve(remote.store);
    for (const format of ['zip', 'tar.gz'] as const) {
      const response = await fetch(url(format, generationId, `running.${format}`));
      expect([response.status, await response.text()]).toEqual([409, 'The generation is still running; download it once it has ended.']);
    }
    await serviceScope(database.db).run(async (tx) => {
      await tx.update(generations).set({ status: 'FAILED', phase: 'DONE', finishedAt: new Date() }).where(eq(generations.id, generationId));
    });
    const response = await fetch(url('zip', generationId, 'ended.zip'));
    expect(response.status).toBe(200);
    (await remote.held.next()).release();
    expect([...(await unzip(Buffer.from(await response.arrayBuffer()))).keys()]).toEqual(['lib/main.dart']);
  });

  it('sends a few archives of one generation at once and a bounded number in all, asking the others to come back', async () => {
    const a = await seedGeneration({}, { 'lib/main.dart': 'void main() {}\n' });
    const b = await seedGeneration({}, { 'lib/main.dart': 'void main() { print(1); }\n' });
    const remote = remoteStore(join(data.path, 'archive-slots'), new Map([...a.blobs, ...b.blobs]));
    const { url, logs, metrics } = await serve(remote.store, { archivesAtOnce: { total: 3, perGeneration: 2 } });
    const download = (generationId: string, name = 'busy.zip') => fetch(url('zip', generationId, name));
    const refused = async (response: Response) => [response.status, response.headers.get('retry-after'), await response.text()];
    const busy = [503, '5', 'Too many downloads at once; try again shortly.'];
    // A slot comes back when the server has closed the response, which its client may see after
    // its own end: a download that needs that slot waits for the line the close logs.
    const closed = (name: string) => logs.first((record) => record.msg === 'archive request' && String(record.path).endsWith(`/${name}`));

    // Two downloads of A, each held at its file: a third of A finds A's slots taken.
    const firstOfA = download(a.generationId, 'first-of-a.zip');
    const firstRead = await remote.held.next();
    const secondOfA = download(a.generationId, 'second-of-a.zip');
    const secondRead = await remote.held.next();
    expect(await refused(await download(a.generationId))).toEqual(busy);
    // One of B takes the last slot of all; another of B finds none.
    const firstOfB = download(b.generationId, 'first-of-b.zip');
    const bRead = await remote.held.next();
    expect(await refused(await download(b.generationId))).toEqual(busy);

    // A download that has ended gives its slot back.
    firstRead.release();
    const ended = await firstOfA;
    expect([ended.status, [...(await unzip(Buffer.from(await ended.arrayBuffer()))).keys()]]).toEqual([200, ['lib/main.dart']]);
    await closed('first-of-a.zip');
    const secondOfB = download(b.generationId, 'second-of-b.zip');
    (await remote.held.next()).release();
    expect((await secondOfB).status).toBe(200);

    secondRead.release();
    bRead.release();
    for (const response of await Promise.all([secondOfA, firstOfB])) expect(response.status).toBe(200);
    for (const name of ['second-of-a.zip', 'first-of-b.zip', 'second-of-b.zip']) await closed(name);

    // A download its client gave up midway gives its slot back too.
    const left = get(url('zip', a.generationId, 'left.zip'));
    left.on('error', () => {});
    const leftRead = await remote.held.next();
    const thirdOfA = download(a.generationId, 'third-of-a.zip');
    const thirdRead = await remote.held.next();
    expect(await refused(await download(a.generationId))).toEqual(busy);
    left.destroy();
    await closed('left.zip');
    leftRead.release();
    thirdRead.release();
    const fourthOfA = download(a.generationId, 'fourth-of-a.zip');
    (await remote.held.next()).release();
    for (const response of await Promise.all([thirdOfA, fourthOfA])) expect(response.status).toBe(200);
    // Operators see the downloads turned away.
    expect(refusalsIn(await metrics.registry.metrics())).toEqual(refusedOnly({ archive_downloads: 3 }));
  });

  it('logs a download the client stopped below error, and a download that failed at error', async () => {
    const sources = { 'README.md': '# Serving\n', 'lib/main.dart': 'void main() {}\n'.repeat(2000) };
    const { generationId, blobs } = await seedGeneration({}, sources);
    await mkdir(join(data.path, 'archive-cache'), { recursive: true });
    const remote = remoteStore(join(data.path, 'archive-cache'), blobs);
    const { logs, url } = await serve(remote.store);

    // The client goes away once the download has begun, while the second file is being read.
    const body = deferred<IncomingMessage>();
    const request = get(url('zip', generationId, 'serving.zip'), (response) => {
      response.once('data', () => body.resolve(response));
    });
    request.on('error', () => {});
    (await remote.held.next()).release();
    const second = await remote.held.next();
    expect((await body.promise).statusCode).toBe(200);
    request.destroy();
    const ended = await logs.first((record) => typeof record.msg === 'string' && /^output request/.test(record.msg));
    second.release();
    expect(ended.level).toBeLessThan(50);
    await logs.first((record) => record.msg === 'archive request');
    expect(logs.records().filter((record) => Number(record.level) >= 50)).toEqual([]);

    // A store that fails mid-download is an error.
    const failed = fetch(url('tar.gz', generationId, 'serving.tar.gz')).then(
      (response) => response.arrayBuffer().then(() => 'whole', () => 'cut'),
      () => 'cut',
    );
    (await remote.held.next()).release();
    (await remote.held.next()).fail(new Error('the blob store is down'));
    const error = await logs.first((record) => record.msg === 'output request failed');
    expect(error.level).toBe(50);
    expect(await failed).toBe('cut');
  });
});

describe(`the local copies of postgres blobs (${databaseKind})`, () => {
  const SLICE = 64 * 1024;
  /** A postgres store reading 64 KiB a statement, its copies in a folder of their own, and a blob of three slices in it. */
  const sliced = async (label: string, content = randomBytes(3 * SLICE - 1000)) => {
    const cacheDir = join(data.path, `sliced-${label}`);
    const cache = localBlobCache(cacheDir);
    const store = postgresBlobStore(database.db, cache, { sliceBytes: SLICE });
    const sha256 = sha256Of(content);
    await store.putMany([{ sha256, content }]);
    cleanups.push(() => serviceScope(database.db).run(async (tx) => void (await tx.delete(artifactBlobs).where(eq(artifactBlobs.sha256, sha256)))));
    const files = async () => (await readdir(cacheDir).catch(() => [])).sort();
    return { cacheDir, cache, store, sha256, content, files };
  };

  it('writes a blob larger than a slice to its copy a slice at a time, byte for byte', async () => {
    const { store, sha256, content, files } = await sliced('whole');
    sliceReads = 0;
    const path = await store.localPath(sha256);
    expect(path).toBeDefined();
    expect((await readFile(path!)).equals(content)).toBe(true);
    expect(sliceReads).toBe(3);
    expect(await files()).toEqual([sha256]);
    // A second use is the copy: no statement reads the blob again.
    expect(await store.localPath(sha256)).toBe(path);
    expect(sliceReads).toBe(3);
    // `read` still gives it whole.
    expect((await store.read(sha256))?.equals(content)).toBe(true);
  });

  it('leaves neither a copy nor a temporary file of a blob whose row goes while it is read', async () => {
    const { cache, store, sha256, files } = await sliced('gone');
    sliceReads = 0;
    // The row is deleted once the first slice is taken, before the second is asked for.
    const path = await cache.path(sha256, async () => {
      const slices = await store.readSlices!(sha256);
      return (
        slices &&
        (async function* () {
          let taken = 0;
          for await (const slice of slices) {
            yield slice;
            if (++taken === 1) await serviceScope(database.db).run((tx) => tx.delete(artifactBlobs).where(eq(artifactBlobs.sha256, sha256)));
          }
        })()
      );
    });
    expect(path).toBeUndefined();
    expect(sliceReads).toBe(2);
    expect(await files()).toEqual([]);
    // Gone before it is read: nothing either.
    expect(await store.localPath(sha256)).toBeUndefined();
    expect(await files()).toEqual([]);
  });

  it('refuses bytes that are not the blob they are stored as, and a read that fails midway, leaving no file', async () => {
    const content = randomBytes(2 * SLICE);
    const claimed = sha256Of(Buffer.concat([content, Buffer.from('!')]));
    const cacheDir = join(data.path, 'sliced-mismatch');
    const store = postgresBlobStore(database.db, localBlobCache(cacheDir), { sliceBytes: SLICE });
    await store.putMany([{ sha256: claimed, content }]);
    cleanups.push(() => serviceScope(database.db).run(async (tx) => void (await tx.delete(artifactBlobs).where(eq(artifactBlobs.sha256, claimed)))));
    await expect(store.localPath(claimed)).rejects.toThrow(/sha256/);
    expect(await readdir(cacheDir)).toEqual([]);

    const cache = localBlobCache(cacheDir);
    const failing = cache.path(sha256Of(content), async () =>
      (async function* () {
        yield content.subarray(0, SLICE);
        throw new Error('the connection went away');
      })(),
    );
    await expect(failing).rejects.toThrow('the connection went away');
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('fails a download whose store stops sending, lets the stalled read go and frees its turn for the next', async () => {
    const cacheDir = join(data.path, 'sliced-stalled');
    const cache = localBlobCache(cacheDir, { remoteReads: 1, pieceTimeoutMs: 200 });
    const stalled = randomBytes(SLICE);
    let letGo = false;
    const stuck = cache.path(sha256Of(stalled), async () => ({
      [Symbol.asyncIterator]: () => {
        let sent = false;
        return {
          next: () => (sent ? new Promise<IteratorResult<Uint8Array>>(() => undefined) : ((sent = true), Promise.resolve({ done: false, value: stalled.subarray(0, 100) }))),
          return: async () => ((letGo = true), { done: true as const, value: undefined }),
        };
      },
    }));
    // Asked while the stalled download holds the only turn.
    const next = randomBytes(100);
    const after = cache.path(sha256Of(next), async () =>
      (async function* () {
        yield next;
      })(),
    );
    await expect(stuck).rejects.toThrow(/no data from the store/);
    expect(letGo).toBe(true);
    expect(await readFile((await after)!)).toEqual(next);
    expect(await readdir(cacheDir)).toEqual([sha256Of(next)]);
  });
});

describe('the local copies of Supabase Storage blobs', () => {
  it('are written as the download arrives, not once it has all arrived', async () => {
    const content = randomBytes(256 * 1024);
    const sha256 = sha256Of(content);
    const rest = deferred();
    // Just enough of Storage: the bucket is there, and the object's first half comes at once, the rest when released.
    const server = createServer((req, res) => {
      if (req.method === 'POST') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"name":"kiln-test"}');
      if (req.url !== `/storage/v1/object/kiln-test/${sha256}`) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': content.length });
      res.write(content.subarray(0, content.length / 2));
      void rest.promise.then(() => res.end(content.subarray(content.length / 2)));
    });
    await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
    cleanups.push(async () => {
      rest.resolve();
      server.closeAllConnections();
      await new Promise((closed) => server.close(closed));
    });
    const cacheDir = join(data.path, 'supabase-cache');
    const store = await supabaseBlobStore(
      { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, serviceRoleKey: 'service', bucket: 'kiln-test' },
      localBlobCache(cacheDir),
    );
    const path = store.localPath(sha256);
    // While the rest is held back, the first half is already in the temporary file.
    await vi.waitFor(
      async () => {
        const temporary = (await readdir(cacheDir).catch(() => [])).filter((name) => name.startsWith('.tmp-'));
        expect(temporary).toHaveLength(1);
        expect((await readFile(join(cacheDir, temporary[0]!))).length).toBe(content.length / 2);
      },
      { timeout: 10_000, interval: 20 },
    );
    rest.resolve();
    expect((await readFile((await path)!)).equals(content)).toBe(true);
    expect(await readdir(cacheDir)).toEqual([sha256]);
  });
});
