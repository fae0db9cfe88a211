import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// initdb and the migrations are most of an embedded database's first start (seconds of
// WebAssembly), and their output is the same every time. So a fresh data directory starts
// as a copy of a cluster that PGlite initialised and migrated, then shut down cleanly, once
// per PGlite version and set of migrations, made by `npm run build` (and so by `npm
// install`; `npm start` builds again when drizzle/ changes). Keys and data are each
// database's own. Without a template PGlite runs initdb, and Kiln every migration, as before.

const cacheDir = fileURLToPath(new URL('../../node_modules/.cache/kiln-pglite/', import.meta.url));

async function templateDir(): Promise<string> {
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const { version } = JSON.parse(await readFile(path.join(path.dirname(entry), '..', 'package.json'), 'utf8')) as { version: string };
  const { migrationsKey } = await import('./migrate.js');
  return path.join(cacheDir, `pgdata-${version}-${await migrationsKey()}`);
}

const isCluster = (dir: string) => stat(path.join(dir, 'PG_VERSION')).then(() => true, () => false);

/** Fills a missing or empty `dataDir` with a copy of the template; false (PGlite will run initdb) when there is none. */
export async function seedFromTemplate(dataDir: string): Promise<boolean> {
  // A database that is there already (every start but the first) needs no template.
  const entries = await readdir(dataDir).catch(() => undefined);
  if (entries && entries.length > 0) return false;
  const template = await templateDir();
  if (!(await isCluster(template))) return false;
  // Copied beside it and renamed into place: a copy cut short never looks like a cluster.
  // Where that cannot be done (a full disk, DATA_DIR on a mount point), PGlite runs initdb.
  const staging = `${dataDir}.seeding-${process.pid}`;
  try {
    copyTree(template, staging);
    if (entries) await rmdir(dataDir);
    await rename(staging, dataDir);
    return true;
  } catch {
    await rm(staging, { recursive: true, force: true });
    if (entries) await mkdir(dataDir, { recursive: true });
    return false;
  }
}

/**
 * Copies a folder tree synchronously, before anything listens: its ~1,000 small files took
 * 0.3-0.8 s as promises (fs.cp), 0.2 s so. Not fs.cpSync (0.08 s): its native copy aborts the
 * process when a folder vanishes under it (a build removing an old template), where this throws.
 */
function copyTree(from: string, to: string): void {
  mkdirSync(to);
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const [source, target] = [path.join(from, entry.name), path.join(to, entry.name)];
    if (entry.isDirectory()) copyTree(source, target);
    else copyFileSync(source, target);
  }
}

/** Makes the template of this PGlite version and these migrations unless it exists, and removes older ones. */
export async function makeTemplate(): Promise<void> {
  const template = await templateDir();
  if (await isCluster(template)) return;
  const staging = `${template}.making-${process.pid}`;
  await mkdir(staging, { recursive: true });
  try {
    const [{ openPglite }, { migrateDatabase }] = await Promise.all([import('./client.js'), import('./migrate.js')]);
    const database = await openPglite(staging);
    await migrateDatabase(database);
    await database.close();
    // Another build may have made it meanwhile: theirs is as good.
    await rename(staging, template).catch(async (error: unknown) => {
      if (!(await isCluster(template))) throw error;
    });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  for (const entry of await readdir(cacheDir)) {
    if (entry.startsWith('pgdata-') && !entry.includes('.making-') && path.join(cacheDir, entry) !== template) {
      await rm(path.join(cacheDir, entry), { recursive: true, force: true });
    }
  }
}

// `npm run build` runs this file once tsc has compiled it. Not awaited at the top level: the
// migrations import client.js, which imports this module, and would wait for it forever.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  // A failure unless it finishes: an exit with the promise still pending counts as one too.
  process.exitCode = 1;
  makeTemplate().then(
    () => (process.exitCode = 0),
    (error: unknown) => process.stderr.write(`${String(error)}\n`),
  );
}
