import { enableCompileCache, registerHooks } from 'node:module';
import { fileURLToPath } from 'node:url';
import { build, isStale } from './build-server.mjs';

// `npm start`: the compiled server in dist/, in this process. tsc runs only when a source
// is newer than the last successful build, and a type error stops the start there.

if (isStale()) {
  const code = build();
  if (code !== 0) process.exit(code);
}

// V8's code cache of the modules below, kept between starts.
enableCompileCache(fileURLToPath(new URL('../node_modules/.cache/kiln-compile', import.meta.url)));

// To learn a .js file's format, Node 24 re-parses its package's exports map for every
// module it loads; drizzle-orm's is 170 KB and ~110 of its modules load at start, which
// made that parse about a third of start-up's module loading. Its relative imports
// (all ESM, "type": "module", no nested package.json) resolve here without it.
const DRIZZLE = '/node_modules/drizzle-orm/';
registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier.startsWith('.') && specifier.endsWith('.js') && context.parentURL?.includes(DRIZZLE)) {
      return { url: new URL(specifier, context.parentURL).href, format: 'module', shortCircuit: true };
    }
    return nextResolve(specifier, context);
  },
});

const { runMain } = await import('../dist/main.js');
await runMain();
