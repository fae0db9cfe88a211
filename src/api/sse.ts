import { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { ExecutionResult } from 'graphql';
import { type Plugin, isAsyncIterable } from 'graphql-yoga';
import type { Logger } from '../observability/logger.js';
import { publicResult } from './public-result.js';

// Subscriptions over SSE (GraphQL over SSE, "distinct connections"), written straight to
// node's response. Yoga still does everything up to the response (CORS, the request
// policy, persisted operations, parse, validate, context, subscribe, masking, stream
// errors, limits); only its writing of a subscription's events is replaced, which went
// through a WHATWG ReadableStream and a TextEncoder, and a JSON.stringify per subscriber.
// Here a result becomes its `event: next` frame once (a live result is shared by every
// subscriber of the same document and variables, see shared-execution.ts), and each
// subscriber gets one write of that buffer. What Yoga writes is kept: the same headers,
// a `:` comment at once and every 12 s (keep-alive), `event: next` per result, `event:
// complete` at the end. Single results (errors, queries sent as SSE) stay with Yoga.
//
// Backpressure: the next result is pulled once the response has taken the last one
// (the stream's inbox counts what queues meanwhile and ends a slow consumer). A client
// that goes away returns the stream at once, which releases its LIVE_STREAMS_PER_USER and
// LIVE_STREAMS_PER_ADDRESS slots; so does one whose socket buffers are full and that takes
// nothing more for `stalledAfterMs` (WS_KEEPALIVE_MS, as long as a graphql-ws peer may miss
// a pong): SSE has no pong to miss.

/** New for every response: the adapter's Headers writes what later plugins add (CORS) into this very object. */
const headers = () => ({ 'Content-Type': 'text/event-stream', Connection: 'keep-alive', 'Cache-Control': 'no-cache', 'Content-Encoding': 'none' });
const PING = Buffer.from(':\n\n');
const COMPLETE = Buffer.from('event: complete\ndata:\n\n');
const PING_INTERVAL_MS = 12_000;

/** The encoded `event: next` frame of each result, shared by every stream that sends that result object. */
const frames = new WeakMap<ExecutionResult, Buffer>();

export interface SseSubscriptions {
  plugin: Plugin;
  /** Cuts every open stream (a shutdown): its client resumes from where it was, elsewhere or later. */
  cutAll(): void;
}

export function useSseSubscriptions(logger: Logger, stalledAfterMs: number): SseSubscriptions {
  const log = logger.child({ source: 'SSE' });
  const open = new Set<ServerResponse>();
  let pinger: NodeJS.Timeout | undefined;
  /** cutAll() was called: a stream that opens later (its request was on its way) is cut as it starts. */
  let cutting = false;
  // One timer for every open stream; a response that is not draining gets no ping. Undefined: not to be opened.
  const track = (response: ServerResponse) => {
    if (cutting) return undefined;
    open.add(response);
    pinger ??= setInterval(() => {
      for (const each of open) if (!each.writableNeedDrain) each.write(PING);
    }, PING_INTERVAL_MS).unref();
    return () => {
      open.delete(response);
      if (open.size > 0) return;
      clearInterval(pinger);
      pinger = undefined;
    };
  };
  const plugin: Plugin = {
    onResultProcess({ result, resultProcessor, setResultProcessor, serverContext }) {
      // A stream gets a processor only from SSE (no other media type takes async
      // iterables here: no @defer or @stream), so Yoga has chosen SSE for this one.
      if (!isAsyncIterable(result)) return;
      // A subscription that did not accept SSE gets 406, and Yoga never reads or returns its
      // stream: returned here, it gives back its LIVE_STREAMS_PER_USER and _PER_ADDRESS slots.
      if (!resultProcessor) return void result[Symbol.asyncIterator]().return?.();
      const { res } = serverContext as { res?: unknown };
      setResultProcessor((stream, fetchAPI) => {
        const body = new EventStream(stream as AsyncIterable<ExecutionResult>, res instanceof ServerResponse ? res : undefined, { track, stalledAfterMs, log });
        return new fetchAPI.Response(body as unknown as BodyInit, { status: 200, headers: headers() });
      }, 'text/event-stream');
    },
  };
  return {
    plugin,
    cutAll: () => {
      cutting = true;
      for (const response of open) response.destroy();
    },
  };
}

/**
 * The response body. Yoga's node adapter writes the head and then pipes a Readable body
 * into node's response: that pipe is where the events start, written by `send`. Read in
 * any other way, it is an ordinary Readable of the same frames.
 */
class EventStream extends Readable {
  private readonly results: AsyncIterator<ExecutionResult>;
  private stopped = false;
  private pinged = false;

  constructor(
    results: AsyncIterable<ExecutionResult>,
    /** Node's response to this request; the client may already have left while the stream opened. */
    private readonly response: ServerResponse | undefined,
    private readonly writer: { track: (response: ServerResponse) => (() => void) | undefined; stalledAfterMs: number; log: Logger },
  ) {
    super();
    this.results = results[Symbol.asyncIterator]();
    if (response?.closed) this.stop();
    else response?.once('close', this.stop);
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    if (!this.response || (destination as unknown) !== this.response) return super.pipe(destination, options);
    void this.send(this.response);
    return destination;
  }

  private async send(response: ServerResponse) {
    const untrack = this.writer.track(response);
    if (!untrack) {
      this.stop();
      response.destroy();
      return;
    }
    try {
      response.write(PING);
      for (;;) {
        const next = await this.results.next();
        if (this.stopped) return;
        if (next.value != null && !response.write(frameOf(next.value)) && !(await drained(response, this.writer.stalledAfterMs))) {
          this.writer.log.info({ stalledAfterMs: this.writer.stalledAfterMs }, 'dropped a subscription whose client took nothing written to it for as long');
          this.stop();
          response.destroy();
          return;
        }
        if (this.stopped) return;
        if (next.done) break;
      }
      response.end(COMPLETE);
    } catch (error) {
      // The mapping step or the response failed: a failure of the stream itself is its last result by now (shared-execution.ts).
      if (this.stopped) return;
      this.writer.log.error({ err: error }, 'subscription stream failed');
      response.destroy();
    } finally {
      this.stopped = true;
      response.off('close', this.stop);
      untrack();
    }
  }

  override _read() {
    if (!this.pinged) {
      this.pinged = true;
      this.push(PING);
      return;
    }
    this.results.next().then(
      (next) => {
        if (next.value != null) this.push(frameOf(next.value));
        if (!next.done) return;
        this.push(COMPLETE);
        this.push(null);
      },
      (error: unknown) => this.destroy(error as Error),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void) {
    this.stop();
    callback(error);
  }

  /** The client went away: the stream is returned at once (which frees its slot), not at its next event. */
  private readonly stop = () => {
    if (this.stopped) return;
    this.stopped = true;
    Promise.resolve()
      .then(() => this.results.return?.())
      .catch((error: unknown) => this.writer.log.warn({ err: error }, 'closing a subscription stream failed'));
  };
}

/** True when the response can take more, or is gone; false when it took nothing for `stalledAfterMs` (0: waits for ever). */
function drained(response: ServerResponse, stalledAfterMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (taken: boolean) => () => {
      response.off('drain', took);
      response.off('close', took);
      clearTimeout(stall);
      resolve(taken);
    };
    const took = done(true);
    response.on('drain', took);
    response.on('close', took);
    const stall = stalledAfterMs > 0 ? setTimeout(done(false), stalledAfterMs) : undefined;
  });
}

function frameOf(result: ExecutionResult): Buffer {
  let frame = frames.get(result);
  if (!frame) {
    frame = Buffer.from(`event: next\ndata: ${JSON.stringify(publicResult(result))}\n\n`);
    frames.set(result, frame);
  }
  return frame;
}
