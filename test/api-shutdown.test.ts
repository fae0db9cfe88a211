import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { databaseKind } from './support/db.js';
import { PASSWORD, uniqueEmail } from './support/fixtures.js';
import { startTestServer } from './support/server.js';

// What a stopping server (SIGTERM, a rolling deploy) does to its clients: a request on its way
// still gets its answer (a committed mutation must not look lost to its client), and a
// WebSocket peer that never answers the close frame does not hold the stop, and with it the
// worker's hand-back of its runs, for ws's 30 s close timeout.

describe(`a stopping API (${databaseKind})`, () => {
  it('answers a request on its way, closing its connection after it, then stops listening', async () => {
    const server = await startTestServer();
    let stopped: Promise<void> | undefined;
    try {
      const body = JSON.stringify({
        query: 'mutation($email: String!, $password: String!) { signUp(input: { email: $email, password: $password }) { __typename } }',
        variables: { email: uniqueEmail('drain'), password: PASSWORD },
      });
      const agent = new http.Agent({ keepAlive: true });
      const answer = new Promise<{ status?: number; connection?: string; text: string }>((resolve, reject) => {
        const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), expect: '100-continue' };
        // A keep-alive connection, as every browser's: the answer says it closes, so nothing is sent on it again.
        const request = http.request(`${server.url}/graphql`, { method: 'POST', agent, headers }, (response) => {
          const parts: Buffer[] = [];
          response.on('data', (part: Buffer) => parts.push(part));
          response.on('end', () => resolve({ status: response.statusCode, connection: response.headers.connection, text: Buffer.concat(parts).toString() }));
          response.on('error', reject);
        });
        request.on('error', reject);
        // The server has the request once it asks for its body: it is told to stop, then the body goes.
        request.once('continue', () => {
          stopped = server.stop();
          request.end(body);
        });
        request.flushHeaders();
      });
      expect(await answer).toEqual({ status: 200, connection: 'close', text: JSON.stringify({ data: { signUp: { __typename: 'AuthSession' } } }) });
      agent.destroy();
      await stopped;
      await expect(fetch(`${server.url}/health`)).rejects.toThrow();
    } finally {
      await (stopped ?? server.stop());
    }
  });

  it('stops without waiting for a WebSocket peer that never answers its close frame', { timeout: 20_000 }, async () => {
    const server = await startTestServer();
    let stopped: Promise<void> | undefined;
    try {
      const { hostname, port } = new URL(server.url);
      const socket = net.connect(Number(port), hostname);
      await once(socket, 'connect');
      // A graphql-ws handshake by hand, then silence: the peer reads nothing more and never answers.
      socket.write(
        `GET /graphql HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n`,
      );
      const [head] = (await once(socket, 'data')) as [Buffer];
      expect(head.toString()).toMatch(/^HTTP\/1\.1 101 /);
      socket.pause();
      const dropped = once(socket, 'close');
      stopped = server.stop();
      await stopped;
      // Read now, what the server sent ends in its end of the connection.
      socket.resume();
      await dropped;
    } finally {
      await (stopped ?? server.stop());
    }
  });
});
