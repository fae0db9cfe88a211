import { enableCompileCache } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build, bundleEntry, isStale } from './build-server.mjs';

// `npm start`: the compiled and bundled server (dist/bundle/), in this process. The build
// runs only when a source is newer than the last successful one, and a type error stops
// the start there.

if (isStale()) {
  const code = await build();
  if (code !== 0) process.exit(code);
}

// V8's code cache of the modules below, kept between starts.
enableCompileCache(fileURLToPath(new URL('../node_modules/.cache/kiln-compile', import.meta.url)));

const { runMain } = await import(pathToFileURL(bundleEntry).href);
await runMain();
