import { readdir } from 'node:fs/promises';
import { basename } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// `npm run bench [-- name ...]`: runs every bench/*.ts but this one, in name order, or
// only those whose names contain one of the arguments. A bench file exports a default
// async function (or does its work when imported); helpers live in subfolders.

const dir = fileURLToPath(new URL('.', import.meta.url));
const filters = process.argv.slice(2);
const files = (await readdir(dir))
  .filter((name) => name.endsWith('.ts') && name !== basename(fileURLToPath(import.meta.url)))
  .filter((name) => filters.length === 0 || filters.some((filter) => name.includes(filter)))
  .sort();

if (files.length === 0) {
  process.stderr.write(`no bench matches ${filters.join(', ')}\n`);
  process.exit(1);
}

for (const file of files) {
  process.stdout.write(`\n=== bench/${file}\n`);
  const started = performance.now();
  const bench = (await import(pathToFileURL(`${dir}${file}`).href)) as { default?: () => Promise<void> };
  if (typeof bench.default === 'function') await bench.default();
  process.stdout.write(`=== bench/${file}: ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
}
// Whatever a bench left open (sockets, timers) must not keep the run alive.
process.exit(0);
