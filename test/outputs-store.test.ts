import { randomUUID } from 'node:crypto';
import { readdir, rm, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { inArray, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Of } from '../src/artifacts/blob-store.js';
import { createOutputs } from '../src/artifacts/outputs.js';
import { storeOutputs } from '../src/artifacts/write-outputs.js';
import { parseConfig } from '../src/config.js';
import { rowsOf } from '../src/db/client.js';
import { artifactBlobs } from '../src/db/schema.js';
import { createLogger } from '../src/observability/logger.js';
import { createMetrics } from '../src/observability/metrics.js';
import { GenerationArchiveDocument, GenerationPreviewDocument } from './gql/graphql.js';
import { unzip } from './support/archives.js';
import { spawnKiln } from './support/cluster.js';
import { databaseKind, testDatabaseUrl } from './support/db.js';
import { type FakeSupabaseStorage, startFakeSupabaseStorage } from './support/fake-supabase-storage.js';
import { createProject } from './support/fixtures.js';
import { rawId, startAccepted, startInstance, tempDir, waitForEnd } from './support/generation-helpers.js';
import { useStarted } from './support/lifecycle.js';
import { rawGet } from './support/raw-http.js';
import { useGenerationServer } from './support/suite-server.js';

// The artefact store behind previews and archives, on each backend: files under
// DATA_DIR (embedded), PostgreSQL (any instance serves any generation, after the
// workspace is gone), and Supabase Storage through supabase-js (a fake Storage server).
// Follow-ups share most bytes, so blobs are stored once; a deleted project's blobs go.

type Backend = { name: 'fs' | 'postgres' | 'supabase'; env: () => Record<string, string> };

let storage: FakeSupabaseStorage;
const backends: Backend[] = [
  { name: 'fs', env: () => ({ ARTIFACT_STORE: 'fs' }) },
  { name: 'postgres', env: () => ({ ARTIFACT_STORE: 'postgres' }) },
  {
    name: 'supabase',
    env: () => ({ ARTIFACT_STORE: 'supabase', SUPABASE_URL: storage.url, SUPABASE_SERVICE_ROLE_KEY: storage.serviceRoleKey, ARTIFACT_BUCKET: 'kiln-test' }),
  },
];

beforeAll(async () => {
  storage = await startFakeSupabaseStorage();
});
afterAll(async () => {
  await storage?.close();
});

describe.each(backends)(`the artefact store: $name (${databaseKind})`, (backend) => {
  const suite = useGenerationServer(backend.env);
  const outputs = useStarted(
    () => {
      const config = parseConfig({ DATA_DIR: suite.server.dataDir, LOG_LEVEL: 'silent', ...backend.env() });
      return createOutputs({ config, db: suite.server.database.db, logger: createLogger('silent'), metrics: createMetrics({ defaultMetrics: false }) });
    },
    (started) => started.close(),
  );

  const query = async <T>(statement: ReturnType<typeof sql>) => rowsOf<T>(await suite.server.database.db.execute(statement));
  const storedBlobs = async (): Promise<string[]> => {
    if (backend.name === 'postgres') return (await query<{ sha256: string }>(sql`select sha256 from artifact_blobs`)).map((row) => row.sha256);
    if (backend.name === 'supabase') return [...(storage.buckets.get('kiln-test')?.keys() ?? [])];
    const dir = join(suite.server.dataDir, 'artifacts');
    const shards = await readdir(dir).catch(() => []);
    return (await Promise.all(shards.map((shard) => readdir(join(dir, shard))))).flat().filter((name) => /^[0-9a-f]{64}$/.test(name));
  };
  const build = async (projectId: string, prompt: string, sessionId?: string) => {
    const started = await startAccepted(suite.owner.client, { projectId, prompt, sessionId });
    const ended = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
    expect(ended.status, JSON.stringify(ended.error)).toBe('SUCCEEDED');
    return ended;
  };

  it('keeps every follow-up whole while storing shared bytes once, and a deleted project leaves no blobs', { timeout: 60_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const first = await build(project.id, 'A habit tracker');
    const followUp = await build(project.id, 'Add streaks', first.sessionId);
    const [totals] = await query<{ logical: string; distinct: string; blobs: string }>(sql`
      select sum(size) as logical, (select sum(size) from (select distinct on (sha256) size from generation_artifacts order by sha256) d) as distinct,
             (select count(distinct sha256) from generation_artifacts) as blobs
      from generation_artifacts`);
    // Both generations reference their files and bundles whole…
    const kinds = await query<{ kind: string; count: number }>(
      sql`select kind::text as kind, count(*)::int as count from generation_artifacts where generation_id = ${rawId(followUp.id)} group by kind order by kind`,
    );
    expect(kinds).toEqual([
      { kind: 'BUNDLE', count: 4 },
      { kind: 'SOURCE', count: followUp.files.length },
    ]);
    // …but the blobs they share (template, bundle scripts and assets) are stored once.
    expect(Number(totals!.distinct)).toBeLessThan(Number(totals!.logical));
    expect((await storedBlobs()).sort()).toHaveLength(Number(totals!.blobs));

    // Another project shares the template and bundle assets with it.
    const kept = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const keptGeneration = await build(kept.id, 'A kept project');
    const keptBlobs = (await query<{ sha256: string }>(sql`select distinct sha256 from generation_artifacts where generation_id = ${rawId(keptGeneration.id)}`)).map((row) => row.sha256);

    // Deleting the project drops its artefact index with it; collection then removes the blobs only it used.
    await suite.server.database.db.execute(sql`delete from projects where id = ${rawId(project.id)}`);
    await outputs.collect(0);
    expect((await storedBlobs()).sort()).toEqual(keptBlobs.sort());
    const { generation } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: keptGeneration.id });
    expect((await fetch(`${generation!.preview!.url}main.dart.js`)).status).toBe(200);
    await suite.server.database.db.execute(sql`delete from projects where id = ${rawId(kept.id)}`);
    expect(await outputs.collect(0)).toBe(keptBlobs.length);
    expect(await storedBlobs()).toEqual([]);
  });

  it('stores equal files once and many at a time, and runs storing the same blobs at once in other orders all succeed', { timeout: 60_000 }, async () => {
    const generationId = randomUUID();
    const source = (i: number, distinct: number) => ({ path: `lib/f${i}.dart`, content: `// ${backend.name} ${distinct} ${i % distinct}\n`.repeat(8) });
    // 250 files, 40 distinct contents: equal ones in one batch and across batches.
    const sources = Array.from({ length: 250 }, (_, i) => source(i, 40));
    const distinctBytes = (files: { content: string }[]) => [...new Set(files.map((file) => file.content))].reduce((sum, content) => sum + Buffer.byteLength(content), 0);
    const first = await storeOutputs(outputs.store, generationId, '/nonexistent', sources);
    expect(first.files).toBe(250);
    expect(first.newBytes).toBe(distinctBytes(sources));
    expect(first.rows.map((row) => [row.path, row.sha256])).toEqual(sources.map((file) => [file.path, sha256Of(file.content)]));
    expect(await storedBlobs()).toEqual(expect.arrayContaining([...new Set(first.rows.map((row) => row.sha256))]));
    expect((await storeOutputs(outputs.store, generationId, '/nonexistent', sources)).newBytes).toBe(0);

    // Four runs of 150 new blobs each, in four orders, at once: none waits on another in a cycle.
    const shared = Array.from({ length: 150 }, (_, i) => source(i, 150));
    const orders = [shared, [...shared].reverse(), [...shared.slice(75), ...shared.slice(0, 75)], [...shared.slice(75)].reverse().concat(shared.slice(0, 75))];
    const runs = await Promise.all(orders.map((order) => storeOutputs(outputs.store, generationId, '/nonexistent', order)));
    for (const run of runs) expect(run.files).toBe(150);
    // Each blob was new to one run only (files: two runs may both write one, as before batches).
    if (backend.name !== 'fs') expect(runs.reduce((sum, run) => sum + run.newBytes, 0)).toBe(distinctBytes(shared));
    for (const file of shared) expect((await outputs.store.read(sha256Of(file.content)))?.toString()).toBe(file.content);
    // No generation refers to them: collection takes each of them, once.
    expect(await outputs.collect(0)).toBe(40 + 150);
  });

  // Supabase Storage is left out: a blob stored again is not touched there (an upload of an
  // existing name is refused), and its `remove` does not look at the age.
  it.runIf(backend.name !== 'supabase')('removes orphan blobs while runs store them again: neither fails, and none is lost', { timeout: 60_000 }, async () => {
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    for (let trial = 0; trial < 40; trial++) {
      const files = Array.from({ length: 200 }, (_, i) => ({ path: `f${i}`, content: `// trial ${trial} file ${i}\n` }));
      await storeOutputs(outputs.store, randomUUID(), '/nonexistent', files);
      const shas = files.map((file) => sha256Of(file.content));
      // No generation refers to them, and they are past the grace period.
      if (backend.name === 'postgres') {
        await suite.server.database.db.update(artifactBlobs).set({ createdAt: sql`now() - interval '2 hours'` }).where(inArray(artifactBlobs.sha256, shas));
      } else {
        await Promise.all(shas.map((sha256) => utimes(join(suite.server.dataDir, 'artifacts', sha256.slice(0, 2), sha256), twoHoursAgo, twoHoursAgo)));
      }
      await Promise.all([
        outputs.store.remove(shas, new Date(Date.now() - 60 * 60 * 1000)),
        storeOutputs(outputs.store, randomUUID(), '/nonexistent', files.slice(0, 100)),
        storeOutputs(outputs.store, randomUUID(), '/nonexistent', files.slice(100).reverse()),
      ]);
      const kept = await Promise.all(shas.map((sha256) => outputs.store.read(sha256)));
      expect(kept.filter((content) => content === undefined)).toHaveLength(0);
    }
    await outputs.collect(0);
  });

  // Postgres and Supabase serve a local copy that each request touches (so it is not pruned),
  // files the blob that each store of the same bytes touches: neither may change the validators.
  it('answers a revalidation with 304 and a resumed download with 206, however often the file was served or stored since', { timeout: 60_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const generation = await build(project.id, 'Revalidated');
    const { generation: withPreview } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: generation.id });
    const path = new URL(`${withPreview!.preview!.url}main.dart.js`).pathname;
    const first = await rawGet(suite.server.url, path);
    expect(first.status).toBe(200);
    const etag = first.headers.etag!;
    // Another generation stores the same bytes.
    await outputs.store.putMany([{ sha256: sha256Of(first.body), content: first.body }]);

    const again = await rawGet(suite.server.url, path, { 'if-none-match': etag });
    expect(again.status).toBe(304);
    expect(again.headers.etag).toBe(etag);
    const resumed = await rawGet(suite.server.url, path, { range: 'bytes=10-', 'if-range': etag });
    expect(resumed.status).toBe(206);
    expect(resumed.body).toEqual(first.body.subarray(10));
    expect((await rawGet(suite.server.url, path, { 'if-none-match': '"other"' })).status).toBe(200);
  });

  it('serves previews and archives from the store after the workspace is gone', { timeout: 60_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER', name: 'Kept' });
    const generation = await build(project.id, 'A kept app');
    await rm(join(suite.server.workspacesDir, rawId(project.id)), { recursive: true, force: true });
    const { generation: withPreview } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: generation.id });
    const page = await fetch(withPreview!.preview!.url);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('A kept app');
    expect((await fetch(`${withPreview!.preview!.url}assets/AssetManifest.json`)).status).toBe(200);
    const { generation: withArchive } = await suite.owner.client.expectNoErrors(GenerationArchiveDocument, { id: generation.id, format: 'ZIP' });
    const files = unzip(Buffer.from(await (await fetch(withArchive!.archive!.url)).arrayBuffer()));
    expect([...files.keys()].sort()).toEqual(generation.files.map((file) => file.path).sort());
    // A blob in use survives collection, young or old.
    expect(await outputs.collect(0)).toBe(0);
    expect((await fetch(withPreview!.preview!.url)).status).toBe(200);
  });
});

describe('outputs configuration', () => {
  it('defaults to the embedded store, or PostgreSQL with DATABASE_URL, and refuses what cannot work', () => {
    expect(parseConfig({}).outputs).toMatchObject({ store: 'fs', signedUrlTtlSeconds: 3600, publicUrl: undefined, previewOrigin: undefined });
    expect(parseConfig({ DATABASE_URL: 'postgres://db/kiln' }).outputs.store).toBe('postgres');
    expect(parseConfig({ PUBLIC_URL: 'https://kiln.example.com/', PREVIEW_ORIGIN: 'https://preview.example.com' }).outputs).toMatchObject({
      publicUrl: 'https://kiln.example.com',
      previewOrigin: 'https://preview.example.com',
    });
    expect(() => parseConfig({ ARTIFACT_STORE: 'supabase', PUBLIC_URL: 'kiln.example.com', PREVIEW_ORIGIN: 'ftp://x' })).toThrow(
      /ARTIFACT_STORE=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY[\s\S]*PUBLIC_URL must be an absolute http\(s\) URL[\s\S]*PREVIEW_ORIGIN must be/,
    );
  });
});

describe(`a preview URL issued by one API instance is served by another (${databaseKind})`, () => {
  const suite = useGenerationServer({ ARTIFACT_STORE: 'postgres' });
  // Another machine: its own DATA_DIR, the same database.
  const other = useStarted(() => startInstance(suite.server.database, { ROLE: 'api', ARTIFACT_STORE: 'postgres' }));

  it.skipIf(!testDatabaseUrl)('…and by a separate Kiln process on the same PostgreSQL (its default store there)', { timeout: 90_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'Served by another process' });
    expect((await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id)).status).toBe('SUCCEEDED');
    const processData = await tempDir('api-process');
    const api = await spawnKiln('api', { DATABASE_URL: suite.server.database.url!, ROLE: 'api', EVENTS: 'postgres', DATA_DIR: processData.path });
    try {
      const { generation } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: started.id });
      const page = await fetch(generation!.preview!.url.replace(suite.server.url, api.url));
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('Served by another process');
    } finally {
      await api.stop();
      await processData.remove();
    }
  });

  it('verifies the signature with the key from the database and reads the bundle from PostgreSQL', { timeout: 60_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'Shared across instances' });
    expect((await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id)).status).toBe('SUCCEEDED');
    await rm(suite.server.workspacesDir, { recursive: true, force: true });

    const { generation } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: started.id });
    const onOther = generation!.preview!.url.replace(suite.server.url, other.url);
    const page = await fetch(onOther);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('Shared across instances');
    // And the reverse: issued by the other, served by the first.
    const { generation: fromOther } = await other.client(suite.owner.accessToken).expectNoErrors(GenerationArchiveDocument, { id: started.id, format: 'TAR_GZ' });
    const archive = await fetch(fromOther!.archive!.url.replace(other.url, suite.server.url));
    expect(archive.status).toBe(200);
    expect(archive.headers.get('content-type')).toBe('application/gzip');
  });
});
