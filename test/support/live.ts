import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';

// Clients of the live streams as a browser would use them: graphql-ws (the library
// client, and a raw socket speaking the protocol by hand when a test needs to control
// reading), and GraphQL over SSE in "distinct connections" mode with plain fetch.

export interface GraphQLResult<T> {
  data?: T | null;
  errors?: { message: string; extensions?: Record<string, unknown> }[];
}

export const wsUrl = (httpUrl: string) => `${httpUrl.replace(/^http/, 'ws')}/graphql`;

export interface ClosedEvent {
  code: number;
  reason: string;
}

/** A graphql-ws client that records how its socket closed; always `dispose()` it. */
export function liveClient(httpUrl: string, token: string | undefined, options: { connectionParams?: Record<string, unknown> } = {}) {
  let closed: (event: ClosedEvent) => void = () => {};
  const closedEvent = new Promise<ClosedEvent>((resolve) => (closed = resolve));
  let connected: () => void = () => {};
  const connectedEvent = new Promise<void>((resolve) => (connected = resolve));
  const client: Client = createClient({
    url: wsUrl(httpUrl),
    webSocketImpl: WebSocket,
    connectionParams: options.connectionParams ?? (token === undefined ? undefined : { authorization: `Bearer ${token}` }),
    retryAttempts: 0,
    lazy: false,
    onNonLazyError: () => {},
    on: {
      connected: () => connected(),
      closed: (event) => {
        const { code, reason } = event as { code: number; reason: string | Buffer };
        closed({ code, reason: String(reason) });
      },
    },
  });
  return { client, closed: closedEvent, connected: connectedEvent, dispose: () => client.dispose() };
}

export interface Collected<T> {
  /** Results with data, in order. */
  items: T[];
  /** Resolves when the operation ends: completed, or failed (errors as a result, an error message, or a close). */
  ended: Promise<{ errors?: GraphQLResult<T>['errors']; error?: unknown }>;
  /** Stops the operation (the client sends complete). */
  stop(): void;
  /** Resolves once `count` items have arrived. */
  atLeast(count: number): Promise<void>;
}

/** Subscribes with a graphql-ws client and collects what arrives. */
export function collect<T, V>(client: Client, document: TypedDocumentNode<T, V>, variables: V): Collected<T> {
  const items: T[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  let errors: GraphQLResult<T>['errors'];
  let end: (value: { errors?: GraphQLResult<T>['errors']; error?: unknown }) => void = () => {};
  const ended = new Promise<{ errors?: GraphQLResult<T>['errors']; error?: unknown }>((resolve) => (end = resolve));
  const stop = client.subscribe<T>(
    { query: print(document), variables: variables as Record<string, unknown> },
    {
      next: (result) => {
        if (result.errors?.length) errors = result.errors as GraphQLResult<T>['errors'];
        if (result.data) items.push(result.data);
        for (const waiter of waiters) if (items.length >= waiter.count) waiter.resolve();
      },
      error: (error) => end({ error, errors: Array.isArray(error) ? (error as GraphQLResult<T>['errors']) : errors }),
      complete: () => end({ errors }),
    },
  );
  return {
    items,
    ended,
    stop,
    atLeast: (count) =>
      new Promise<void>((resolve, reject) => {
        if (items.length >= count) return resolve();
        waiters.push({ count, resolve });
        void ended.then((how) => (items.length >= count ? resolve() : reject(new Error(`ended after ${items.length} items: ${JSON.stringify(how)}`))));
      }),
  };
}

// ------------------------------------------------------------------ raw graphql-transport-ws

export interface RawMessage {
  type: string;
  id?: string;
  payload?: unknown;
}

/** A socket speaking graphql-transport-ws by hand: the test decides when it reads. */
export class RawSocket {
  readonly messages: RawMessage[] = [];
  /** Bytes of the messages received. */
  bytes = 0;
  readonly closed: Promise<ClosedEvent>;
  private listeners: (() => void)[] = [];

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data: Buffer) => {
      this.bytes += data.length;
      this.messages.push(JSON.parse(data.toString('utf8')) as RawMessage);
      for (const listener of this.listeners) listener();
    });
    this.closed = new Promise((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static open(httpUrl: string, headers: Record<string, string> = {}, options: { autoPong?: boolean } = {}): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(wsUrl(httpUrl), 'graphql-transport-ws', { headers, ...options });
      socket.once('open', () => resolve(new RawSocket(socket)));
      socket.once('unexpected-response', (_request, response) => reject(new UpgradeRefused(response.statusCode ?? 0)));
      socket.once('error', reject);
    });
  }

  send(message: RawMessage) {
    this.socket.send(JSON.stringify(message));
  }

  /** connection_init with the token, then waits for the ack. */
  async init(token: string) {
    this.send({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } });
    await this.waitFor((m) => m.type === 'connection_ack');
  }

  subscribe<V>(id: string, document: TypedDocumentNode<unknown, V>, variables: V) {
    this.send({ type: 'subscribe', id, payload: { query: print(document), variables } });
  }

  /** Resolves with the first message (already received or to come) that matches. */
  waitFor(predicate: (message: RawMessage) => boolean): Promise<RawMessage> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.messages.find(predicate);
        if (!found) return false;
        this.listeners = this.listeners.filter((l) => l !== listener);
        resolve(found);
        return true;
      };
      const listener = () => void check();
      if (check()) return;
      this.listeners.push(listener);
      void this.closed.then((event) => {
        if (!check()) reject(new Error(`socket closed (${event.code} ${event.reason}) before the awaited message`));
      });
    });
  }

  close() {
    this.socket.terminate();
  }
}

export class UpgradeRefused extends Error {
  constructor(readonly status: number) {
    super(`WebSocket upgrade refused with HTTP ${status}`);
  }
}

// ------------------------------------------------------------------ GraphQL over SSE (distinct connections)

export interface SseEvent {
  event: string;
  data: string;
}

/**
 * A subscription over SSE: POST (or GET) /graphql with `Accept: text/event-stream`,
 * read as the server sends it. `abort()` ends it as a client closing the stream.
 */
export function sseSubscribe<T, V>(
  httpUrl: string,
  token: string,
  document: TypedDocumentNode<T, V>,
  variables: V,
  options: { method?: 'GET' | 'POST' } = {},
) {
  const controller = new AbortController();
  const items: T[] = [];
  const events: SseEvent[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  let errors: GraphQLResult<T>['errors'];
  const headers = { accept: 'text/event-stream', authorization: `Bearer ${token}` };
  const query = print(document);
  const request =
    options.method === 'GET'
      ? fetch(`${httpUrl}/graphql?${new URLSearchParams({ query, variables: JSON.stringify(variables) })}`, { headers, signal: controller.signal })
      : fetch(`${httpUrl}/graphql`, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json' },
          body: JSON.stringify({ query, variables }),
          signal: controller.signal,
        });
  const ended = (async () => {
    const response = await request;
    if (response.headers.get('content-type')?.split(';')[0] !== 'text/event-stream') {
      throw new Error(`not an event stream: HTTP ${response.status} ${response.headers.get('content-type')}: ${await response.text()}`);
    }
    try {
      for await (const event of parseEvents(response.body!)) {
        events.push(event);
        if (event.event === 'complete') return { completed: true, errors };
        if (event.event !== 'next') continue;
        const result = JSON.parse(event.data) as GraphQLResult<T>;
        if (result.errors?.length) errors = result.errors;
        if (result.data) items.push(result.data);
        for (const waiter of waiters) if (items.length >= waiter.count) waiter.resolve();
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    }
    return { completed: false, errors };
  })();
  return {
    items,
    events,
    ended,
    abort: () => controller.abort(),
    atLeast: (count: number) =>
      new Promise<void>((resolve, reject) => {
        if (items.length >= count) return resolve();
        waiters.push({ count, resolve });
        void ended.then(
          () => (items.length >= count ? resolve() : reject(new Error(`ended after ${items.length} items`))),
          reject,
        );
      }),
  };
}

/** Server-sent events of a response body (comments and pings skipped). */
export async function* parseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const bytes of body) {
    buffer += decoder.decode(bytes, { stream: true });
    for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
      }
      if (event === 'message' && data.length === 0) continue;
      yield { event, data: data.join('\n') };
    }
  }
}

/** Seqs that run from 0 to the last without a gap or a repeat. */
export function isContiguousFromZero(seqs: number[]): boolean {
  return seqs.every((seq, index) => seq === index);
}
