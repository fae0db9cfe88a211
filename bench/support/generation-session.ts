import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';

// What the pipeline benches share: the tests' fake flutter, and a signed-up user with a
// FLUTTER project on a running Kiln, reached over HTTP and graphql-ws as a client would.

const fakeFlutterScript = fileURLToPath(new URL('../../test/fixtures/bin/flutter', import.meta.url));

/** Writes a `flutter` into `dir` that runs the tests' fake in its `ok` mode; returns its path for FLUTTER_BIN. */
export async function writeFakeFlutter(dir: string): Promise<string> {
  const bin = path.join(dir, 'flutter');
  await writeFile(bin, `#!/bin/sh\nFAKE_FLUTTER_MODE=ok exec '${fakeFlutterScript}' "$@"\n`);
  await chmod(bin, 0o755);
  return bin;
}

/** Kiln's environment for a pipeline bench: embedded database in `dataDir`, the fake flutter, no model delay, no sandbox, no start limit. */
export function pipelineBenchEnv(dataDir: string, flutterBin: string): Record<string, string> {
  return {
    DATA_DIR: dataDir,
    LOG_LEVEL: 'silent',
    OFFLINE_CHUNK_DELAY_MS: '0',
    FLUTTER_BIN: flutterBin,
    BUILD_SANDBOX: 'none',
    RATE_LIMIT_GENERATIONS_PER_USER: 'off',
    RATE_LIMIT_GENERATIONS_PER_IP: 'off',
  };
}

export interface GenerationSession {
  gql<T>(query: string, variables?: Record<string, unknown>): Promise<T>;
  /** The project's global id. */
  projectId: string;
  /** Resolves when generationUpdated reports a terminal status of this generation. */
  terminal(generationId: string): Promise<void>;
  close(): Promise<void>;
}

/** Signs a new user up on the Kiln at `url` and creates a FLUTTER project. */
export async function openGenerationSession(url: string): Promise<GenerationSession> {
  let token = '';
  const gql = async <T>(query: string, variables: Record<string, unknown> = {}): Promise<T> => {
    const response = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await response.json()) as { data?: T; errors?: unknown };
    if (body.errors || !body.data) throw new Error(`GraphQL errors: ${JSON.stringify(body.errors)}`);
    return body.data;
  };
  const signUp = await gql<{ signUp: { accessToken: string } }>(
    'mutation($email: String!, $password: String!) { signUp(input: { email: $email, password: $password }) { ... on AuthSession { accessToken } } }',
    { email: `bench-${Date.now()}@example.com`, password: 'correct horse battery staple' },
  );
  token = signUp.signUp.accessToken;
  const { createProject } = await gql<{ createProject: { id: string } }>('mutation { createProject(input: { name: "Bench", target: FLUTTER }) { ... on Project { id } } }');
  const ws = createClient({ url: `${url.replace(/^http/, 'ws')}/graphql`, webSocketImpl: WebSocket, lazy: true, retryAttempts: 0, connectionParams: { authorization: `Bearer ${token}` } });
  return { gql, projectId: createProject.id, terminal: (id) => terminal(ws, id), close: async () => await ws.dispose() };
}

function terminal(ws: Client, id: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const stop = ws.subscribe<{ generationUpdated: { status: string } }>(
      { query: 'subscription($id: ID!) { generationUpdated(generationId: $id) { status } }', variables: { id } },
      {
        next: ({ data }) => {
          if (data && ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(data.generationUpdated.status)) {
            stop();
            resolve();
          }
        },
        error: reject,
        complete: () => resolve(),
      },
    );
  });
}
