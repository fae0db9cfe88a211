import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import send from 'send';
import { archiveFilename } from '../src/artifacts/archive.js';
import { createOutputs } from '../src/artifacts/outputs.js';
import { manifestStore } from '../src/artifacts/manifest-store.js';
import { parseConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { migrateDatabase } from '../src/db/migrate.js';
import { serviceScope } from '../src/db/scope.js';
import { type FileRow, generationStore } from '../src/generations/store.js';
import { startKiln } from '../src/main.js';
import { createLogger } from '../src/observability/logger.js';
import { createMetrics } from '../src/observability/metrics.js';
import { fileDigest } from '../src/workspace/workspace.js';

// What a person's outputs cost to serve, in one process on embedded PGlite:
// 1. preview throughput of a 2 MB bundle through Kiln (signed URL, manifest, fs blobs,
//    `send`) against `send` on a bare node:http server over the same files on disk;
// 2. a ZIP and a tar.gz of 1,000 files (16 MB): time and peak RSS growth while streaming;
// 3. what the store keeps over a first generation and 10 follow-ups (offline model, the
//    test suite's fake flutter): bytes referenced against bytes stored.
// OUTPUTS_SECONDS (5 a side), OUTPUTS_CONCURRENCY (8), OUTPUTS_FOLLOW_UPS (10).

const SECONDS = Number(process.env.OUTPUTS_SECONDS ?? 5);
const CONCURRENCY = Number(process.env.OUTPUTS_CONCURRENCY ?? 8);
const FOLLOW_UPS = Number(process.env.OUTPUTS_FOLLOW_UPS ?? 10);
const log = (line: string) => process.stdout.write(`${line}\n`);
const fakeFlutter = fileURLToPath(new URL('../test/fixtures/bin/flutter', import.meta.url));
const MB = 1024 * 1024;

/** index.html, a 1.5 MB main.dart.js, flutter.js and 40 assets: 2 MB, like a small Flutter web build. */
async function writeBundle(dir: string): Promise<string[]> {
  const files: Record<string, Buffer> = {
    'index.html': Buffer.from('<!DOCTYPE html><html><head><base href="/"><title>bench</title></head><body><script src="main.dart.js"></script></body></html>'),
    'main.dart.js': Buffer.from(randomBytes(1.5 * MB * 0.75).toString('base64')),
    'flutter.js': Buffer.from(randomBytes(96 * 1024 * 0.75).toString('base64')),
  };
  for (let i = 0; i < 40; i++) files[`assets/asset-${i}.bin`] = randomBytes(11 * 1024);
  for (const [name, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), content);
  }
  return Object.keys(files).filter((name) => name !== 'index.html');
}

/** CONCURRENCY GETs in flight for `seconds`, round-robin over the files; bytes per second. */
async function load(port: number, paths: string[], seconds: number): Promise<{ mbPerSecond: number; requests: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  let bytes = 0;
  let requests = 0;
  let next = 0;
  const get = (target: string) =>
    new Promise<void>((resolve, reject) => {
      request({ port, path: target, agent }, (res) => {
        if (res.statusCode !== 200) reject(new Error(`GET ${target}: ${res.statusCode}`));
        res.on('data', (chunk: Buffer) => (bytes += chunk.length));
        res.on('end', () => {
          requests++;
          resolve();
        });
      })
        .once('error', reject)
        .end();
    });
  const started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < until) await get(paths[next++ % paths.length]!);
    }),
  );
  agent.destroy();
  return { mbPerSecond: bytes / MB / ((performance.now() - started) / 1000), requests };
}

/** Downloads `url` while sampling RSS; the time and how far RSS rose above where it started. */
async function download(url: string): Promise<{ ms: number; bytes: number; rssGrowthMb: number }> {
  const before = process.memoryUsage().rss;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const started = performance.now();
  let bytes = 0;
  const response = await fetch(url);
  if (response.status !== 200 || !response.body) throw new Error(`archive: ${response.status}`);
  for await (const chunk of response.body) bytes += (chunk as Uint8Array).byteLength;
  const ms = performance.now() - started;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  return { ms, bytes, rssGrowthMb: (peak - before) / MB };
}

export default async function bench(): Promise<void> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'kiln-bench-outputs-'));
  const env = { LOG_LEVEL: 'silent', DATA_DIR: dataDir, FLUTTER_BIN: fakeFlutter, OFFLINE_CHUNK_DELAY_MS: '0', AUTO_FIX_MAX_ROUNDS: '0', BUILD_SANDBOX: 'none' };
  const config = parseConfig(env);
  const database = await openDatabase({});
  await migrateDatabase(database);
  const kiln = await startKiln(config, { database, port: 0, logger: createLogger('silent') });
  const outputs = await createOutputs({ config, db: database.db, logger: createLogger('silent'), metrics: createMetrics({ defaultMetrics: false }) });
  outputs.listening(kiln.url);
  const graphql = async (query: string, variables: Record<string, unknown>, token?: string) => {
    const response = await fetch(`${kiln.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    return ((await response.json()) as { data: Record<string, any> }).data;
  };
  const signUp = await graphql(
    'mutation($email: String!, $password: String!) { signUp(input: { email: $email, password: $password }) { ... on AuthSession { accessToken user { id } } } }',
    { email: `bench-${Date.now()}@example.com`, password: 'correct horse battery staple' },
  );
  const token = signUp.signUp.accessToken as string;
  const userId = Buffer.from(signUp.signUp.user.id as string, 'base64').toString().split(':')[1]!;
  const project = await graphql('mutation { createProject(input: { name: "Bench", target: FLUTTER }) { ... on Project { id } } }', {}, token);
  const projectId = Buffer.from(project.createProject.id as string, 'base64').toString().split(':')[1]!;
  const scope = serviceScope(database.db);
  /** A finished generation of the project, made directly (no model, no build). */
  const succeeded = () =>
    scope.run((tx) =>
      generationStore.insert(tx, {
        projectId,
        createdBy: userId,
        sessionId: crypto.randomUUID(),
        prompt: 'bench',
        provider: 'bench',
        model: 'bench',
        status: 'SUCCEEDED',
        phase: 'DONE',
      }),
    );

  /** As the pipeline keeps a generation's outputs: blobs stored first, then its files and their index in one transaction. */
  const store = async (generationId: string, bundleDir: string, files: FileRow[]) => {
    const stored = await outputs.storeBlobs(generationId, bundleDir, files);
    await scope.run(async (tx) => {
      await generationStore.insertFiles(tx, files);
      await stored.record(tx);
    });
  };

  // 1. Preview throughput.
  const bundleDir = path.join(dataDir, 'bundle');
  const paths = await writeBundle(bundleDir);
  const previewed = await succeeded();
  await store(previewed.id, bundleDir, []);
  const previewPath = new URL(outputs.previewUrl(previewed.id).url).pathname;
  const bare = createServer((req, res) => void send(req, (req.url ?? '/').split('?')[0]!, { root: bundleDir }).pipe(res));
  await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
  const barePort = (bare.address() as AddressInfo).port;
  const kilnPort = Number(new URL(kiln.url).port);
  log(`preview of a 2 MB bundle (${paths.length} files round-robin), ${CONCURRENCY} in flight, ${SECONDS} s a side in two alternating slices`);
  // Warm both (JIT of every path on the way, page cache), then measure.
  for (let i = 0; i < 3; i++) {
    await load(kilnPort, paths.map((p) => `${previewPath}${p}`), 1);
    await load(barePort, paths.map((p) => `/${p}`), 1);
  }
  // Alternating slices (kiln, bare, bare, kiln): a busy neighbour on this shared machine weighs on both sides alike.
  const viaKiln = { mbPerSecond: 0, requests: 0 };
  const viaBare = { mbPerSecond: 0, requests: 0 };
  const sides = { kiln: [viaKiln, kilnPort, previewPath], bare: [viaBare, barePort, '/'] } as const;
  for (const name of ['kiln', 'bare', 'bare', 'kiln'] as const) {
    const [side, port, prefix] = sides[name];
    const run = await load(port, paths.map((p) => `${prefix}${p}`), SECONDS / 2);
    side.mbPerSecond += run.mbPerSecond / 2;
    side.requests += run.requests;
  }
  log(`  kiln preview      ${viaKiln.mbPerSecond.toFixed(0).padStart(6)} MB/s   (${viaKiln.requests} requests)`);
  log(`  bare send         ${viaBare.mbPerSecond.toFixed(0).padStart(6)} MB/s   (${viaBare.requests} requests)`);
  await new Promise<void>((resolve) => bare.close(() => resolve()));

  // 2. Archives of 1,000 files.
  const archived = await succeeded();
  const files = Array.from({ length: 1000 }, (_, i) => {
    const content = `// file ${i}\n${randomBytes(12 * 1024).toString('base64')}\n`;
    return { generationId: archived.id, path: `lib/part-${String(i).padStart(4, '0')}.dart`, content, ...fileDigest(content) };
  });
  await store(archived.id, path.join(dataDir, 'no-bundle'), files);
  log(`archive of 1,000 files (${(files.reduce((sum, f) => sum + f.size, 0) / MB).toFixed(1)} MB of source)`);
  for (const format of ['ZIP', 'TAR_GZ'] as const) {
    const filename = archiveFilename('Bench', archived.id, format);
    await download(outputs.archiveUrl(archived.id, format, filename).url);
    const result = await download(outputs.archiveUrl(archived.id, format, filename).url);
    log(`  ${format.padEnd(7)} ${result.ms.toFixed(0).padStart(6)} ms   ${(result.bytes / MB).toFixed(1)} MB sent   peak RSS growth ${result.rssGrowthMb.toFixed(1)} MB`);
  }

  // 3. Deduplication over follow-ups.
  const before = await scope.run((tx) => manifestStore.totals(tx));
  const start = async (prompt: string, sessionId?: string) => {
    const started = await graphql(
      'mutation($input: StartGenerationInput!) { startGeneration(input: $input) { ... on Generation { id sessionId } ... on Error { message } } }',
      { input: { projectId: project.createProject.id, prompt, sessionId } },
      token,
    );
    const id = started.startGeneration.id as string;
    for (;;) {
      const { generation } = await graphql('query($id: ID!) { generation(id: $id) { status } }', { id }, token);
      if (['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(generation.status)) {
        if (generation.status !== 'SUCCEEDED') throw new Error(`follow-up ${prompt}: ${generation.status}`);
        return started.startGeneration.sessionId as string;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const sessionId = await start('A reading list');
  for (let i = 1; i <= FOLLOW_UPS; i++) await start(`Follow-up ${i}: add feature number ${i}`, sessionId);
  const after = await scope.run((tx) => manifestStore.totals(tx));
  const logical = after.logicalBytes - before.logicalBytes;
  const stored = after.storedBytes - before.storedBytes;
  log(`store over 1 generation and ${FOLLOW_UPS} follow-ups: ${(logical / 1024).toFixed(0)} KiB referenced, ${(stored / 1024).toFixed(0)} KiB stored: dedup ${(logical / stored).toFixed(1)}x`);

  await outputs.close();
  await kiln.stop();
  await database.close();
  await rm(dataDir, { recursive: true, force: true });
  log(`  ratio kiln/bare: preview throughput ${(viaKiln.mbPerSecond / viaBare.mbPerSecond).toFixed(2)}x`);
}
