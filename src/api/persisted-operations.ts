import { readFileSync } from 'node:fs';
import { usePersistedOperations } from '@graphql-yoga/plugin-persisted-operations';
import { GraphQLError, type Source } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { ConfigError } from '../config.js';

// PERSISTED_OPERATIONS_ONLY: the server runs only the operations of a manifest built
// with the clients (codegen's client preset writes one with
// `presetConfig: { persistedDocuments: true }`: `{ "<hash>": "<document>" }`).
// Over HTTP and SSE a client sends the id (`documentId`, or Apollo's
// `extensions.persistedQuery.sha256Hash`); graphql-ws always carries the document
// text, so every transport is also held to the manifest's documents at parse time.

export const PERSISTED_QUERY_ONLY = 'PERSISTED_QUERY_ONLY';

/**
 * Document text by id, read at start-up. Accepts `{ id: document }` and Apollo's `{ operations: [{ id, body }] }`.
 * A manifest that is missing or malformed is a ConfigError: the operator's to fix, told without a stack.
 */
export function loadManifest(file: string): Map<string, string> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([`PERSISTED_OPERATIONS_MANIFEST ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`]);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError([`PERSISTED_OPERATIONS_MANIFEST ${file} is not JSON: ${(error as Error).message}`]);
  }
  const entries: [string, unknown][] =
    parsed && typeof parsed === 'object' && Array.isArray((parsed as { operations?: unknown }).operations)
      ? (parsed as { operations: { id?: unknown; body?: unknown }[] }).operations.map((op) => [String(op.id), op.body])
      : Object.entries(parsed ?? {});
  const manifest = new Map<string, string>();
  for (const [id, document] of entries) {
    if (typeof document !== 'string') throw new ConfigError([`PERSISTED_OPERATIONS_MANIFEST ${file}: the entry ${id} is not a document string`]);
    manifest.set(id, document);
  }
  if (manifest.size === 0) throw new ConfigError([`PERSISTED_OPERATIONS_MANIFEST ${file} lists no operations`]);
  return manifest;
}

const refused = (message: string) => () => new GraphQLError(message, { extensions: { code: PERSISTED_QUERY_ONLY, http: { status: 400 } } });

export function usePersistedOperationsOnly(manifest: ReadonlyMap<string, string>): Plugin[] {
  const documents = new Set(manifest.values());
  return [
    usePersistedOperations({
      getPersistedOperation: (id) => manifest.get(id) ?? null,
      extractPersistedOperationId: (params) => {
        const { documentId } = params as { documentId?: unknown };
        if (typeof documentId === 'string') return documentId.replace(/^sha256:/, '');
        const hash = (params.extensions?.persistedQuery as { sha256Hash?: unknown } | undefined)?.sha256Hash;
        return typeof hash === 'string' ? hash : null;
      },
      allowArbitraryOperations: false,
      customErrors: {
        persistedQueryOnly: refused('Only persisted operations are accepted: send the documentId instead of the document.'),
        keyNotFound: refused('Only persisted operations are accepted: send the documentId of one.'),
        notFound: refused('That persisted operation is unknown.'),
      },
    }) as Plugin,
    {
      // graphql-ws (and anything else that reaches the parser): manifest documents only.
      onParse({ params }) {
        const text = typeof params.source === 'string' ? params.source : (params.source as Source).body;
        if (!documents.has(text)) throw refused('Only persisted operations are accepted.')();
      },
    },
  ];
}
