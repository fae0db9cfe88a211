import { connect } from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { GenerationUpdatedDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { LONG_ANSWER, useFakeOpenAi } from './support/fake-openai.js';
import { createProject } from './support/fixtures.js';
import { startAccepted, within } from './support/generation-helpers.js';
import { sseSubscribe } from './support/live.js';
import { LogCapture } from './support/log-capture.js';
import { useGenerationServer } from './support/suite-server.js';

// A client that stops reading an SSE stream answers no ping, as a graphql-ws peer that stops
// reading misses its pong: once it has taken nothing written to it for WS_KEEPALIVE_MS, the
// server drops it, and its LIVE_STREAMS_PER_USER slot is free for the user's next stream.
// (It held the stream, the slot and the socket for as long as it stayed connected, past its
// token's expiry too.)

const CHUNKS_QUERY = 'subscription($id: ID!, $afterSeq: Int) { generationChunks(generationId: $id, afterSeq: $afterSeq) { seq text } }';
const DROPPED = 'dropped a subscription whose client took nothing written to it for as long';

describe(`a client that stops reading an SSE stream (${databaseKind})`, () => {
  const llm = useFakeOpenAi({ kind: 'stream', chunks: LONG_ANSWER });
  const logs = new LogCapture();
  const suite = useGenerationServer(() => ({ ...llm.kilnEnv, LIVE_STREAMS_PER_USER: '1', WS_KEEPALIVE_MS: '500', LOG_LEVEL: 'info' }), 'ok', { logTo: logs });

  it('is dropped once it takes nothing for WS_KEEPALIVE_MS, and its slot goes to the next stream', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const generation = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'Write at length' });
    // Followed over SSE, in the user's one slot (waitForEnd's socket and its subscription would take two); given back before `complete` is written.
    const updates = sseSubscribe(suite.server.url, suite.owner.accessToken, GenerationUpdatedDocument, { id: generation.id });
    expect(await within(updates.ended, 60_000, () => 'the generation did not end')).toEqual({ completed: true, errors: undefined });
    expect(updates.items.at(-1)?.generationUpdated.status).toBe('SUCCEEDED');

    // The replay of the whole answer, over a socket that reads nothing once the request is out.
    const { hostname, port } = new URL(suite.server.url);
    const socket = connect(Number(port), hostname);
    const received: Buffer[] = [];
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (data: Buffer) => received.push(data));
    socket.pause();
    const body = JSON.stringify({ query: CHUNKS_QUERY, variables: { id: generation.id } });
    socket.write(
      `POST /graphql HTTP/1.1\r\nHost: ${hostname}:${port}\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${suite.owner.accessToken}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );

    await vi.waitFor(() => expect(logs.records()).toContainEqual(expect.objectContaining({ source: 'SSE', msg: DROPPED, stalledAfterMs: 500 })), { timeout: 30_000 });

    // The user's one slot is free again: a stream of theirs opens and completes (after the last seq: nothing to replay).
    const next = await fetch(`${suite.server.url}/graphql`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', authorization: `Bearer ${suite.owner.accessToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ query: CHUNKS_QUERY, variables: { id: generation.id, afterSeq: LONG_ANSWER.length } }),
    });
    const events = await next.text();
    expect(events).not.toContain('TOO_MANY');
    expect(events).toMatch(/event: complete\n/);

    // What the dropped client gets once it reads again: what the buffers held, cut short, never the end of the stream.
    socket.resume();
    await ended;
    const text = Buffer.concat(received).toString('utf8');
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(text).toContain('event: next');
    expect(text).not.toContain('event: complete');
    expect(Buffer.byteLength(text)).toBeLessThan(LONG_ANSWER.join('').length);
  });
});
