import { cp, mkdir, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// initdb is most of an embedded database's first start (seconds of WebAssembly), and its
// output is the same every time. So a fresh data directory starts as a copy of a cluster
// PGlite initialised and shut down cleanly once per PGlite version, made by `npm run build`
// (and so by `npm install`). Only initdb's output is shared: migrations, keys and data are
// each database's own. Without a template PGlite runs initdb itself, as before.

const cacheDir = fileURLToPath(new URL('../../node_modules/.cache/kiln-pglite/', import.meta.url));

async function templateDir(): Promise<string> {
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const { version } = JSON.parse(await readFile(path.join(path.dirname(entry), '..', 'package.json'), 'utf8')) as { version: string };
  return path.join(cacheDir, `pgdata-${version}`);
}

const isCluster = (dir: string) => stat(path.join(dir, 'PG_VERSION')).then(() => true, () => false);

/** Fills a missing or empty `dataDir` with a copy of the template; false (PGlite will run initdb) when there is none. */
export async function seedFromTemplate(dataDir: string): Promise<boolean> {
  const template = await templateDir();
  if (!(await isCluster(template))) return false;
  const entries = await readdir(dataDir).catch(() => undefined);
  if (entries && entries.length > 0) return false;
  // Copied beside it and renamed into place: a copy cut short never looks like a cluster.
  // Where that cannot be done (a full disk, DATA_DIR on a mount point), PGlite runs initdb.
  const staging = `${dataDir}.seeding-${process.pid}`;
  try {
    await cp(template, staging, { recursive: true });
    if (entries) await rmdir(dataDir);
    await rename(staging, dataDir);
    return true;
  } catch {
    await rm(staging, { recursive: true, force: true });
    if (entries) await mkdir(dataDir, { recursive: true });
    return false;
  }
}

/** Makes this PGlite version's template unless it exists. */
export async function makeTemplate(): Promise<void> {
  const template = await templateDir();
  if (await isCluster(template)) return;
  const staging = `${template}.making-${process.pid}`;
  await mkdir(staging, { recursive: true });
  try {
    const { PGlite } = await import('@electric-sql/pglite');
    const pglite = new PGlite(staging);
    await pglite.waitReady;
    await pglite.close();
    // Another build may have made it meanwhile: theirs is as good.
    if (!(await isCluster(template))) await rename(staging, template);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

// `npm run build` runs this file once tsc has compiled it.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await makeTemplate();
