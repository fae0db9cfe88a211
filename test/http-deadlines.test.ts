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

/** Milliseconds from now until the server ends the connection (the client never ends it). */
async function closedAfter(socket: Socket): Promise<number> {
  const start = performance.now();
  await once(socket, 'close');
  return performance.now() - start;
}

// Both wait for the server's deadlines (10 s and 30 s): side by side, the file takes ~30 s rather than ~40 s.
describe.concurrent('a request that stalls', () => {
  const server = useTestServer();

  it('is cut when its headers stop coming', async () => {
    const { socket, received } = await rawConnection(server.url);
    socket.write('POST /graphql HTTP/1.1\r\nHost: kiln\r\nContent-Type: appli');
    const elapsed = await closedAfter(socket);
    // headersTimeout 10 s, checked every second (node's own: 60 s, checked every 30 s).
    expect(elapsed).toBeGreaterThan(9_000);
    expect(elapsed).toBeLessThan(20_000);
    expect(received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('is cut when its body stops short of its Content-Length', async () => {
    const { socket } = await rawConnection(server.url);
    const body = `{"query":"${'y'.repeat(99_990 - 10)}`;
    expect(body.length).toBe(99_990);
    socket.write(`POST /graphql HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`);
    socket.write(body);
    const elapsed = await closedAfter(socket);
    // The body's deadline: 30 s from the request's headers.
    expect(elapsed).toBeGreaterThan(25_000);
    expect(elapsed).toBeLessThan(45_000);
  });
});
