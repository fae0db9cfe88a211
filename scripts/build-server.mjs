import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// The server's JavaScript in dist/ (`tsc -b tsconfig.build.json`), bundled with its
// dependencies into dist/bundle/ for `npm start`, and a cheap check of whether it is older
// than its sources, so that `npm start` loads TypeScript only when there is something to
// compile. Plain JavaScript: it runs before anything is compiled.

const root = fileURLToPath(new URL('..', import.meta.url));
// Written only when tsc succeeded: tsc's own dist/.tsbuildinfo is rewritten even when it reports type errors.
const stamp = join(root, 'dist', '.built');
// What the build reads, besides node_modules: a file or folder changed, added or removed here makes dist/ stale.
// drizzle/ and the auth shim: the embedded database's template holds their output (src/db/pglite-template.ts).
const inputs = ['src', 'drizzle', 'supabase/auth-shim.sql', 'scripts/build-server.mjs', 'tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json'];

/** The newest modification time in a file or folder tree (a folder's own changes when an entry is added, removed or renamed). */
function newestChange(path) {
  const stats = statSync(path, { throwIfNoEntry: false });
  if (!stats) return 0;
  if (!stats.isDirectory()) return stats.mtimeMs;
  let newest = stats.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestChange(join(path, entry)));
  return newest;
}

/** Whether dist/ may not match the sources: never built successfully, or something changed since the last build began. */
export function isStale() {
  const built = statSync(stamp, { throwIfNoEntry: false })?.mtimeMs;
  if (built === undefined || !existsSync(bundleEntry)) return true;
  return inputs.some((input) => newestChange(join(root, input)) > built);
}

/** The server as `npm start` loads it. */
export const bundleEntry = join(root, 'dist', 'bundle', 'main.js');

/** Runs `tsc -b tsconfig.build.json` (type errors included), then bundles; returns an exit code, and 0 stamps dist/ as current. */
export async function build() {
  // The stamp carries the time the build began: a source saved while tsc runs still counts as newer.
  const began = new Date();
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const { status } = spawnSync(process.execPath, [tsc, '-b', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  if (status !== 0) return status ?? 1;
  await bundle();
  writeFileSync(stamp, '');
  utimesSync(stamp, began, began);
  // The embedded database initialised and migrated, copied by every first start (src/db/pglite-template.ts); only a speed-up, so a failure only warns.
  const template = spawnSync(process.execPath, [join(root, 'dist', 'db', 'pglite-template.js')], { cwd: root, stdio: 'inherit' });
  if (template.status !== 0) process.stderr.write('warning: no PGlite template was made; a first start runs initdb and every migration\n');
  return 0;
}

/**
 * dist/main.js and its dependencies as one module and a chunk per lazy import: Node then
 * loads a few files instead of ~1,700 (most of a start went to resolving and loading
 * them). dist/bundle/ sits two levels down, as every dist/ module that finds a project
 * file from its own URL does. PGlite stays outside (it loads its WebAssembly from beside
 * its own module), and so do the tracing SDK (it hooks the modules it instruments) and the
 * OpenTelemetry API it registers with (one copy, or Kiln's spans would never reach the SDK).
 */
async function bundle() {
  const { build: esbuild } = await import('esbuild');
  const outdir = dirname(bundleEntry);
  const staging = `${outdir}.${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  await esbuild({
    entryPoints: [join(root, 'dist', 'main.js')],
    outdir: staging,
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    external: ['@electric-sql/pglite', '@opentelemetry/sdk-node', '@opentelemetry/api'],
    // The CommonJS dependencies inside call require() for Node's own modules.
    banner: { js: "import { createRequire as kilnCreateRequire } from 'node:module'; const require = kilnCreateRequire(import.meta.url);" },
    // Read with `node --enable-source-maps` (NODE_OPTIONS) for stack traces into src/.
    sourcemap: 'linked',
    legalComments: 'none',
    logLevel: 'warning',
  });
  // Moved in file by file, the entry last, and nothing removed: a server already running
  // from dist/bundle/ still finds the chunks it imports late (GraphiQL, tracing), which
  // keep their names while their content is the same; a start meanwhile reads a whole entry.
  mkdirSync(outdir, { recursive: true });
  const entry = basename(bundleEntry);
  for (const name of readdirSync(staging).sort((a, b) => Number(a.startsWith(entry)) - Number(b.startsWith(entry)))) {
    renameSync(join(staging, name), join(outdir, name));
  }
  rmSync(staging, { recursive: true, force: true });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = await build();
