import { randomUUID } from 'node:crypto';
import { readdir, utimes } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { sha256Of } from '../src/artifacts/blob-store.js';
import { manifestStore } from '../src/artifacts/manifest-store.js';
import { CACHE_PRUNE_EVERY_MS, type Outputs, createOutputs } from '../src/artifacts/outputs.js';
import { parseConfig } from '../src/config.js';
import { projects } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { createLogger } from '../src/observability/logger.js';
import { createMetrics } from '../src/observability/metrics.js';
import { type TestDatabase, createTestDatabase, databaseKind } from './support/db.js';
import { type FakeSupabaseStorage, startFakeSupabaseStorage } from './support/fake-supabase-storage.js';
import { tempDir } from './support/generation-helpers.js';
import { insertGenerationRow } from './support/rows.js';

// What outputs leave behind is taken away: an API instance (which collects no blobs) still
// prunes the local copies of remote blobs it served, and one collection on Supabase Storage
// takes every orphan blob, however many pages of the listing they fill.

let database: TestDatabase;
let data: Awaited<ReturnType<typeof tempDir>>;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  data = await tempDir('outputs-housekeeping');
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(async () => {
  await database?.close();
  await data?.remove();
});

/** createOutputs as src/main.ts calls it for this environment, and where its local copies of blobs go. */
async function outputsFor(env: Record<string, string>): Promise<{ outputs: Outputs; cacheDir: string }> {
  const config = parseConfig({ DATA_DIR: join(data.path, randomUUID()), LOG_LEVEL: 'silent', ...env });
  const outputs = await createOutputs({
    config,
    db: database.db,
    logger: createLogger('silent'),
    metrics: createMetrics({ defaultMetrics: false }),
    collectPeriodically: config.role !== 'api',
  });
  cleanups.push(() => outputs.close());
  return { outputs, cacheDir: join(config.dataDir, 'artifact-cache') };
}

/** A project with one generation whose web bundle is these files, stored in `outputs`' store. */
async function seedBundle(outputs: Outputs, files: Record<string, string>) {
  const rows = Object.entries(files).map(([path, text]) => ({ kind: 'BUNDLE' as const, path, sha256: sha256Of(text), size: Buffer.byteLength(text) }));
  await outputs.store.putMany(Object.values(files).map((text) => ({ sha256: sha256Of(text), content: Buffer.from(text) })));
  return serviceScope(database.db).run(async (tx) => {
    const { project, generation } = await insertGenerationRow(tx, 'Housekeeping');
    await manifestStore.insert(tx, rows.map((row) => ({ ...row, generationId: generation.id })));
    return { projectId: project.id, generationId: generation.id, sha256s: rows.map((row) => row.sha256) };
  });
}

/** Serves `outputs` on a port of its own; resolves to a function that fetches a preview's file. */
async function serve(outputs: Outputs) {
  const server: Server = createServer((req, res) => {
    if (!outputs.route(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((closed) => server.close(closed));
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return async (generationId: string, path: string) => {
    const answer = await fetch(`${origin}${new URL(outputs.previewUrl(generationId).url).pathname}${path}`);
    return { status: answer.status, text: await answer.text() };
  };
}

describe(`an API instance's local copies of blobs (${databaseKind})`, () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('are pruned on a timer, though it never collects blobs: a deleted project’s, unused for a day, go', async () => {
    // The timers createOutputs sets are the test's to fire.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const { outputs, cacheDir } = await outputsFor({ ROLE: 'api', ARTIFACT_STORE: 'postgres' });
    const get = await serve(outputs);
    const deleted = await seedBundle(outputs, { 'index.js': 'deleted project', 'style.css': 'body { color: red }' });
    const kept = await seedBundle(outputs, { 'index.js': 'kept project' });
    expect(await get(deleted.generationId, 'index.js')).toEqual({ status: 200, text: 'deleted project' });
    expect((await get(deleted.generationId, 'style.css')).status).toBe(200);
    expect(await get(kept.generationId, 'index.js')).toEqual({ status: 200, text: 'kept project' });
    const copies = async () => (await readdir(cacheDir)).filter((name) => !name.startsWith('.')).sort();
    expect(await copies()).toEqual([...deleted.sha256s, ...kept.sha256s].sort());

    // The project is deleted, and its copies go unused for two days; the other's were just served.
    await serviceScope(database.db).run((tx) => tx.delete(projects).where(eq(projects.id, deleted.projectId)));
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 60 * 60 * 1000);
    for (const sha256 of deleted.sha256s) await utimes(join(cacheDir, sha256), twoDaysAgo, twoDaysAgo);

    vi.advanceTimersByTime(CACHE_PRUNE_EVERY_MS);
    // Closing waits for a prune under way.
    await outputs.close();
    expect(await copies()).toEqual(kept.sha256s);
  });
});

describe(`collecting orphan blobs on Supabase Storage (${databaseKind})`, () => {
  let storage: FakeSupabaseStorage;
  beforeAll(async () => {
    storage = await startFakeSupabaseStorage();
  });
  afterAll(async () => {
    await storage?.close();
  });

  it('takes every orphan in one collection, past the first pages of the listing, and keeps the blobs in use', { timeout: 60_000 }, async () => {
    const { outputs } = await outputsFor({
      ARTIFACT_STORE: 'supabase',
      SUPABASE_URL: storage.url,
      SUPABASE_SERVICE_ROLE_KEY: storage.serviceRoleKey,
      ARTIFACT_BUCKET: 'kiln-housekeeping',
    });
    const inUse = await seedBundle(outputs, { 'index.js': 'in use', 'app.js': 'also in use' });
    // 2,500 blobs of a deleted project's, two hours old: three pages of the listing.
    const bucket = storage.buckets.get('kiln-housekeeping')!;
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    for (let i = 0; i < 2500; i++) {
      const content = Buffer.from(`orphan ${i}`);
      bucket.set(sha256Of(content), { content, createdAt: twoHoursAgo });
    }

    expect(await outputs.collect()).toBe(2500);
    expect([...bucket.keys()].sort()).toEqual(inUse.sha256s.sort());
  });
});
