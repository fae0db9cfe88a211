import { once } from 'node:events';
import { type Socket, connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { useTestServer } from './support/server.js';

// A client that stops sending half-way through a request loses its connection: its headers must
// arrive within 10 s and its body within 30 s (node's 60 s headersTimeout let idle sockets pile up
// until file descriptors ran out; a body stalled short of its length kept its memory for minutes).

/** A raw TCP connection to the server, connected; what the server sends is kept in `received`. */
async function rawConnection(url: string): Promise<{ socket: Socket; received: () => string }> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  // A destroyed connection may reach the client as ECONNRESET: 'close' follows either way.
  socket.on('error', () => {});
  await once(socket, 'connect');
  return { socket, received: () => Buffer.concat(chunks).toString('latin1') };
}

// Both wait for the server's deadlines (10 s and 30 s): side by side, the file takes ~30 s rather than ~40 s.
describe.concurrent('a request that stalls', () => {
  const server = useTestServer();

  // Each waits for the server to end the connection: with node's own deadlines (60 s for headers,
  // 300 s for a request, checked every 30 s) these would run out of time instead.
  it('is cut when its headers stop coming, with 408', { timeout: 45_000 }, async () => {
    const { socket, received } = await rawConnection(server.url);
    socket.write('POST /graphql HTTP/1.1\r\nHost: kiln\r\nContent-Type: appli');
    await once(socket, 'close');
    expect(received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('is cut when a body of 1 MiB stops a few bytes short of its Content-Length', { timeout: 55_000 }, async () => {
    const { socket, received } = await rawConnection(server.url);
    const length = 1024 * 1024;
    socket.write(`POST /graphql HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`);
    socket.write(`{"query":"${'y'.repeat(length - 10 - 5)}`);
    await once(socket, 'close');
    // Cut, not answered: nothing of the body was taken as a request.
    expect(received()).not.toMatch(/^HTTP\/1\.1 200 /);
  });
});
