import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { onTestFinished } from 'vitest';

// A Gemini REST server on 127.0.0.1 that the real @google/genai client talks to
// (shared/fixtures/gemini-wire-format.md): scripted answers, recorded requests.

export type GeminiBehaviour =
  /**
   * A 200 SSE stream, one event per chunk, the last with finishReason (STOP unless given). Given
   * thoughts, the model thinks first, delayMs per thought: one event per thought when the request
   * asked for them (thinkingConfig.includeThoughts), otherwise in silence, as Gemini does.
   * headersAfterMs: the response's headers wait that long (a gateway that answers only once the model does).
   * gate: each chunk waits until the test lets it out (chunkGate), after any delay.
   */
  | { kind: 'stream'; chunks: string[]; thoughts?: string[]; delayMs?: number; finishReason?: string; usage?: GeminiUsage; headersAfterMs?: number; gate?: ChunkGate }
  /**
   * A non-2xx answer with Google's error body; `retryDelay` ("0.2s") adds a google.rpc.RetryInfo
   * detail, `retryAfter` a Retry-After header (as a gateway in front of Gemini sends one).
   */
  | { kind: 'error'; status: number; message?: string; retryDelay?: string; retryAfter?: string }
  /** Sends the chunks (each with the usage so far, when given), then nothing more, keeping the connection open (see dropConnection). */
  | { kind: 'stall'; chunks: string[]; usage?: GeminiUsage }
  /** Sends the 200 headers, then destroys the connection before any event. */
  | { kind: 'drop' }
  /**
   * Sends an event per thought with the usage so far (the thought itself only when the request
   * asked for thoughts), and no answer text, then closes the connection mid-stream.
   */
  | { kind: 'thinkThenDrop'; thoughts: string[]; usage: GeminiUsage }
  /** The prompt refused outright: promptFeedback.blockReason and no candidates. */
  | { kind: 'promptBlocked'; blockReason: string }
  /** A 200 event stream made of these writes, as they are. */
  | { kind: 'raw'; pieces: string[] };

/**
 * Holds a scripted stream's chunks until the test lets them out: a test that needs its
 * generation still streaming at some point (a subscriber joining, leaving, a cancel) decides
 * when the answer goes on, however slow the machine is.
 */
export interface ChunkGate {
  /** Lets `count` more chunks out. */
  release(count?: number): void;
  /** Lets every chunk out, now and later. */
  open(): void;
  /** Resolves once the stream is waiting to send chunk `index` (0-based): everything before it has gone out. */
  reached(index: number): Promise<void>;
  /** Resolves when chunk `index` may go out. */
  passage(index: number): Promise<void>;
}

export function chunkGate(): ChunkGate {
  let allowed = 0;
  let waitingAt = -1;
  let passages: { index: number; resolve: () => void }[] = [];
  let arrivals: { index: number; resolve: () => void }[] = [];
  const settle = () => {
    for (const passage of passages.filter((p) => p.index < allowed)) passage.resolve();
    passages = passages.filter((p) => p.index >= allowed);
    for (const arrival of arrivals.filter((a) => a.index <= waitingAt)) arrival.resolve();
    arrivals = arrivals.filter((a) => a.index > waitingAt);
  };
  return {
    release: (count = 1) => {
      allowed += count;
      settle();
    },
    open: () => {
      allowed = Infinity;
      settle();
    },
    reached: (index) => new Promise((resolve) => {
      arrivals.push({ index, resolve });
      settle();
    }),
    passage: (index) => new Promise((resolve) => {
      waitingAt = Math.max(waitingAt, index);
      passages.push({ index, resolve });
      settle();
    }),
  };
}

/** A model's answer that writes `files` (path → content), cut into `pieces` chunks of about one size (by code point), as a gated stream sends them. */
export function answerInPieces(files: Record<string, string>, pieces: number): string[] {
  return piecesOf(`Here it is.\n${Object.entries(files).map(([path, content]) => `<file path="${path}">\n${content}</file>\n`).join('')}`, pieces);
}

/** `text` in `count` pieces of about one size, never splitting a character. */
export function piecesOf(text: string, count: number): string[] {
  const points = Array.from(text);
  const size = Math.ceil(points.length / count);
  return Array.from({ length: count }, (_, i) => points.slice(i * size, (i + 1) * size).join('')).filter((piece) => piece.length > 0);
}

/** A small Flutter app's files, as the model writes them (the fake flutter builds any valid answer). */
export function flutterApp(title = 'Checklist'): Record<string, string> {
  // A Dart string: a quote, a backslash or a dollar sign (interpolation) is escaped.
  const name = title.replace(/[\\'$]/g, (c) => `\\${c}`);
  return {
    'lib/main.dart': `import 'package:flutter/material.dart';\n\nvoid main() => runApp(const MaterialApp(title: '${name}', home: Scaffold(body: Center(child: Text('${name}')))));\n`,
  };
}

/** An answer that goes out only as the test lets it: script `behaviours` for the run it is meant for. */
export interface HeldAnswer {
  gate: ChunkGate;
  pieces: string[];
  /**
   * The held answer for the next model request, then `after` for any later one (a retry, a
   * run left over by a failed case): no other run ever waits on this gate.
   */
  behaviours: [GeminiBehaviour, GeminiBehaviour];
}

/**
 * `pieces`, held by a gate with the first `released` let out at once. The gate opens when
 * the test that made it ends, however it ends (a timeout too), so no run waits on it during
 * the tests after: call it inside a test. `after` defaults to the same answer, ungated.
 */
export function heldAnswer(pieces: string[], options: { released?: number; after?: GeminiBehaviour } = {}): HeldAnswer {
  const gate = chunkGate();
  onTestFinished(() => gate.open());
  if (options.released) gate.release(options.released);
  return { gate, pieces, behaviours: [{ kind: 'stream', chunks: pieces, gate }, options.after ?? { kind: 'stream', chunks: pieces }] };
}

export interface GeminiUsage {
  promptTokens: number;
  outputTokens: number;
}

export interface GeminiRequestBody {
  contents: { role: string; parts: { text: string }[] }[];
  systemInstruction?: { parts: { text: string }[] };
  generationConfig?: { thinkingConfig?: { includeThoughts?: boolean } };
}

export interface RecordedGeminiRequest {
  model: string;
  /** The key as sent: the x-goog-api-key header, or the older ?key= parameter. */
  apiKey: string | undefined;
  body: GeminiRequestBody;
  /** True once the whole response has been written. */
  completed: boolean;
  /** Resolves when the client hangs up before the response is complete. */
  clientGone: Promise<void>;
  /** Destroys the connection now, as a network failure would. */
  dropConnection(): void;
}

export interface FakeGemini {
  /** Pass as httpOptions.baseUrl. */
  baseUrl: string;
  /** What makes Kiln's model this fake. */
  kilnEnv: { LLM_PROVIDER: 'gemini'; GEMINI_API_KEY: string; GEMINI_BASE_URL: string };
  requests: RecordedGeminiRequest[];
  /** Answers for the next requests, in order; the last one repeats. */
  script(...behaviours: GeminiBehaviour[]): void;
  /** Resolves once `count` requests have arrived. */
  received(count: number): Promise<void>;
  close(): Promise<void>;
}

const STATUS_NAMES: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
};
/** The most text one event of a 'stream' carries. */
const MAX_EVENT_TEXT = 64 * 1024;
const STREAM_PATH = /^\/v1beta\/models\/([^/:]+):streamGenerateContent$/;

export async function startFakeGemini(): Promise<FakeGemini> {
  let behaviours: GeminiBehaviour[] = [{ kind: 'stream', chunks: ['Hello'] }];
  const requests: RecordedGeminiRequest[] = [];
  let waiters: { count: number; resolve: () => void }[] = [];

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const model = STREAM_PATH.exec(url.pathname)?.[1];
    if (req.method !== 'POST' || !model || url.searchParams.get('alt') !== 'sse') {
      return sendError(res, 404, `No route for ${req.method} ${url.pathname}`);
    }
    let resolveGone = () => {};
    const recorded: RecordedGeminiRequest = {
      model,
      apiKey: header(req, 'x-goog-api-key') ?? url.searchParams.get('key') ?? undefined,
      body: JSON.parse(await readBody(req)) as GeminiRequestBody,
      completed: false,
      clientGone: new Promise((resolve) => (resolveGone = resolve)),
      dropConnection: () => req.socket.destroy(),
    };
    res.on('finish', () => (recorded.completed = true));
    res.on('close', () => {
      if (!res.writableFinished) resolveGone();
    });
    requests.push(recorded);
    for (const waiter of waiters.filter((w) => requests.length >= w.count)) waiter.resolve();
    waiters = waiters.filter((w) => requests.length < w.count);

    // As Gemini: an empty text part is an unset oneof, refused before any answer.
    const empty = recorded.body.contents.findIndex((content) => content.parts.some((part) => part.text === ''));
    if (empty >= 0) return sendError(res, 400, `* GenerateContentRequest.contents[${empty}].parts[0].data: required oneof field 'data' must have one initialized field`);

    const behaviour = behaviours.length > 1 ? behaviours.shift()! : behaviours[0]!;
    await respond(res, behaviour, recorded.body.generationConfig?.thinkingConfig?.includeThoughts === true);
  }

  const server = http.createServer((req, res) => void handle(req, res).catch(() => res.destroy()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    baseUrl,
    kilnEnv: { LLM_PROVIDER: 'gemini', GEMINI_API_KEY: 'x', GEMINI_BASE_URL: baseUrl },
    requests,
    script: (...next) => {
      behaviours = next;
    },
    received: (count) =>
      requests.length >= count ? Promise.resolve() : new Promise((resolve) => waiters.push({ count, resolve })),
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function respond(res: http.ServerResponse, behaviour: GeminiBehaviour, includeThoughts: boolean): Promise<void> {
  switch (behaviour.kind) {
    case 'error':
      return sendError(res, behaviour.status, behaviour.message ?? `Scripted ${behaviour.status}`, behaviour.retryDelay, behaviour.retryAfter);
    case 'promptBlocked':
      startStream(res);
      sendEvent(res, { promptFeedback: { blockReason: behaviour.blockReason }, usageMetadata: { promptTokenCount: 5 } });
      return void res.end();
    case 'raw':
      startStream(res);
      for (const piece of behaviour.pieces) if (!res.destroyed) res.write(piece);
      return void res.end();
    case 'drop':
      startStream(res);
      return void res.socket?.destroy();
    case 'thinkThenDrop':
      startStream(res);
      behaviour.thoughts.forEach((thought, i) => {
        const thoughtsSoFar = Math.round((behaviour.usage.outputTokens * (i + 1)) / behaviour.thoughts.length);
        sendEvent(res, {
          candidates: [{ content: { parts: includeThoughts ? [{ text: thought, thought: true }] : [], role: 'model' }, index: 0 }],
          usageMetadata: { promptTokenCount: behaviour.usage.promptTokens, thoughtsTokenCount: thoughtsSoFar, totalTokenCount: behaviour.usage.promptTokens + thoughtsSoFar },
        });
      });
      // After what was written has gone out, as a connection lost mid-answer.
      return void res.socket?.destroySoon();
    case 'stall': {
      const { usage } = behaviour;
      startStream(res);
      for (const text of behaviour.chunks) {
        sendEvent(res, {
          ...candidateEvent(text),
          ...(usage ? { usageMetadata: { promptTokenCount: usage.promptTokens, candidatesTokenCount: usage.outputTokens, totalTokenCount: usage.promptTokens + usage.outputTokens } } : {}),
        });
      }
      return;
    }
    case 'stream': {
      const { chunks, delayMs = 0, finishReason = 'STOP' } = behaviour;
      const usage = behaviour.usage ?? { promptTokens: 11, outputTokens: chunks.join('').length };
      if (behaviour.headersAfterMs) await delay(behaviour.headersAfterMs);
      if (res.destroyed) return;
      startStream(res);
      for (const thought of behaviour.thoughts ?? []) {
        if (includeThoughts) sendEvent(res, { candidates: [{ content: { parts: [{ text: thought, thought: true }], role: 'model' }, index: 0 }] });
        if (delayMs > 0) await delay(delayMs);
        if (res.destroyed) return;
      }
      for (let i = 0; i < Math.max(chunks.length, 1); i++) {
        if (i > 0 && delayMs > 0) await delay(delayMs);
        await behaviour.gate?.passage(i);
        if (res.destroyed) return;
        const last = i >= chunks.length - 1;
        // usageMetadata is cumulative, like the real API's.
        const outputSoFar = last ? usage.outputTokens : Math.round((usage.outputTokens * (i + 1)) / chunks.length);
        // Gemini's events are small: a long chunk goes out over several, the usage on the last.
        const text = chunks[i] ?? '';
        const pieces = Array.from({ length: Math.max(1, Math.ceil(text.length / MAX_EVENT_TEXT)) }, (_, n) => text.slice(n * MAX_EVENT_TEXT, (n + 1) * MAX_EVENT_TEXT));
        for (const piece of pieces.slice(0, -1)) sendEvent(res, candidateEvent(piece));
        sendEvent(res, {
          ...candidateEvent(pieces.at(-1)!, last ? finishReason : undefined),
          usageMetadata: {
            promptTokenCount: usage.promptTokens,
            candidatesTokenCount: outputSoFar,
            totalTokenCount: usage.promptTokens + outputSoFar,
          },
        });
      }
      return void res.end();
    }
  }
}

function candidateEvent(text: string, finishReason?: string) {
  return {
    candidates: [{ content: { parts: text ? [{ text }] : [], role: 'model' }, index: 0, ...(finishReason ? { finishReason } : {}) }],
    modelVersion: 'gemini-2.5-flash',
    responseId: 'fake-response',
  };
}

function startStream(res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
}

function sendEvent(res: http.ServerResponse, event: unknown): void {
  res.write(`data: ${JSON.stringify(event)}\n\n`);
}

function sendError(res: http.ServerResponse, status: number, message: string, retryDelay?: string, retryAfter?: string): void {
  const details = retryDelay ? [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay }] : undefined;
  res.writeHead(status, { 'content-type': 'application/json', ...(retryAfter ? { 'retry-after': retryAfter } : {}) });
  res.end(JSON.stringify({ error: { code: status, message, status: STATUS_NAMES[status] ?? 'UNKNOWN', ...(details ? { details } : {}) } }));
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts).toString('utf8');
}
