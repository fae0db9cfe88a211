import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { isConnectionError } from '../db/outage.js';
import type { Logger } from '../observability/logger.js';
import { TIMED_OUT, within } from '../deadlines.js';
import { type CrossProcessEventTarget, LocalListeners, throttledWarn } from './listeners.js';

// EVENTS=postgres: events travel between processes as NOTIFY on one channel, received
// with LISTEN on a dedicated connection.
//
// - Events are delivered to this process's own listeners at once; the notification
//   goes to the others (each process ignores what it sent itself).
// - Publishing is serialised on one connection and sends whatever is waiting in one
//   statement, so other processes see one publisher's events in order. The pipeline
//   publishes one event per ~50 ms batch, never one per token.
// - A payload must stay under PostgreSQL's 8,000-byte NOTIFY limit. A larger one is
//   shrunk to a pointer (`shrink`, e.g. the seq range of a batch) and each receiving
//   process that has listeners for it reads the rows back (`expand`) once, in order with
//   the topic's other events and within `readTimeoutMs` (else its subscribers catch up).
// - While the database is unreachable (a failover), NOTIFY is retried with back-off, in
//   order, rather than dropped; other errors drop the batch (subscribers repair).
// - LISTEN needs a session of its own: a direct connection or a session-mode pooler,
//   never a transaction-mode pooler (LISTEN_DATABASE_URL may point elsewhere than
//   DATABASE_URL for that reason).
// - postgres.js re-issues LISTEN when the connection closes, but gives up if the server
//   is down at that moment, and a silently dead socket is not noticed at all. So the
//   listener proves it is alive: every `healthCheckMs` it notifies itself on a channel of
//   its own and, when that does not come back in time, it is rebuilt (and retried until
//   the database answers). After every reconnect, `resync` produces, for each topic this
//   process listens to, an event that makes subscribers notice what they missed;
//   subscribers repair from the database in any case.
// - The publisher's connection can go silently dead too (half-open after a failover, a
//   proxy that stops forwarding): its statements then never settle. The health ping goes
//   out on the publisher, so it proves both connections: a ping statement that has not
//   completed within `healthTimeoutMs` means the publisher is dead, and it is replaced by a
//   new client (the old one ended at once, one warning). The batch it was sending and what
//   queued up behind it go out, in order, on the new connection: nothing is lost unless more
//   than MAX_PENDING pile up (the stream's database reads repair those). A batch the old
//   connection did deliver (or a stalled server delivers later) arrives twice, possibly after
//   newer ones; streams skip seqs they already have, and read the state afresh on every status event.
//   Nothing in the health check waits without a bound.

/** PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more; keep a margin. */
export const MAX_NOTIFY_BYTES = 7_900;
const MAX_PENDING = 10_000;
/** Events received that may wait behind reads from the database (pointers), all topics together. */
export const MAX_WAITING = 1_000;
const STATEMENT_BATCH = 100;
/** Back-off of NOTIFY while the database is unreachable. */
const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 2_000;
const CONNECT_TIMEOUT_S = 5;

export interface PostgresEventTargetOptions {
  /** LISTEN connection: direct or session-mode (never the transaction pooler). */
  listenUrl: string;
  /** NOTIFY connection: any, the transaction pooler included. */
  publishUrl: string;
  logger: Logger;
  channel?: string;
  /** A stand-in for a payload too large for NOTIFY; undefined when there is none (the event is not sent). */
  shrink(topic: string, detail: unknown): unknown;
  /** The payload behind a stand-in, read from the database; undefined when there is nothing to deliver. */
  expand(topic: string, pointer: unknown): Promise<unknown>;
  /** After a reconnect, or a read that took too long: an event for `topic` that makes its subscribers catch up (undefined: none). */
  resync?(topic: string): Promise<unknown>;
  /** How long `expand` (or `resync` in its place) may take before it is given up; 5 s. */
  readTimeoutMs?: number;
  healthCheckMs?: number;
  healthTimeoutMs?: number;
}

interface Envelope {
  /** The sending process. */
  o: string;
  /** A counter: NOTIFY drops identical payloads within one transaction. */
  n: number;
  /** Topic (`routingKey:id`). */
  t: string;
  /** The payload, or `p`, a pointer to it. */
  d?: unknown;
  p?: unknown;
}

export type PostgresEventTarget = CrossProcessEventTarget;

export function createPostgresEventTarget(options: PostgresEventTargetOptions): PostgresEventTarget {
  const log = options.logger.child({ source: 'PostgresEvents' });
  const warn = throttledWarn(log);
  // Its own: through a network partition a publisher is replaced every cycle; said once per interval.
  const warnReplaced = throttledWarn(log);
  const channel = options.channel ?? 'kiln_events';
  const origin = randomUUID();
  // One channel per process for its own health checks, so pings do not fan out.
  const pingChannel = `${channel}_ping_${origin.replaceAll('-', '').slice(0, 16)}`;
  const healthCheckMs = options.healthCheckMs ?? 2_000;
  const healthTimeoutMs = options.healthTimeoutMs ?? 5_000;
  const readTimeoutMs = options.readTimeoutMs ?? 5_000;
  const listeners = new LocalListeners();

  /** The NOTIFY connection. */
  const openPublisher = (): postgres.Sql =>
    postgres(options.publishUrl, {
      max: 1,
      onnotice: () => {},
      connect_timeout: CONNECT_TIMEOUT_S,
      connection: { application_name: 'kiln-events-publish' },
    });
  let publisher = openPublisher();
  // Ending the old client at once rejects what it was sending (flush then sends it again on the new one).
  const replacePublisher = (afterMs: number) => {
    const old = publisher;
    publisher = openPublisher();
    warnReplaced({ afterMs, pending: pending.length }, 'the event publisher stopped answering; sending on a new connection');
    void old.end({ timeout: 0 }).catch(() => {});
  };
  let counter = 0;
  let pending: string[] = [];
  let flushing: Promise<void> | undefined;
  let closed = false;

  const send = (payload: string) => {
    if (closed) return;
    if (pending.length >= MAX_PENDING) {
      // The database has been unreachable for a while: the oldest go (subscribers repair).
      pending.shift();
      warn({ pending: pending.length }, 'too many events waiting for the database; dropping the oldest');
    }
    pending.push(payload);
    flushing ??= flush().finally(() => (flushing = undefined));
  };

  const flush = async () => {
    let delayMs = FIRST_RETRY_MS;
    while (pending.length > 0 && !closed) {
      const batch = pending.slice(0, STATEMENT_BATCH);
      pending = pending.slice(batch.length);
      const current = publisher;
      try {
        // One statement, one transaction; the elements are taken in order, so the
        // notifications go out in publishing order.
        await current`select pg_notify(${channel}, payload) from json_array_elements_text(${JSON.stringify(batch)}::text::json) as payload`;
        delayMs = FIRST_RETRY_MS;
      } catch (error) {
        if (current !== publisher) {
          // The health check found this connection dead: the batch goes out first on the new one.
          pending = [...batch, ...pending].slice(-MAX_PENDING);
          continue;
        }
        if (!isConnectionError(error)) {
          warn({ err: error, lost: batch.length }, 'NOTIFY failed; subscribers will repair from the database');
          continue;
        }
        // The database is away (a failover): the batch goes out, in order, once it is back.
        pending = [...batch, ...pending].slice(-MAX_PENDING);
        warn({ err: error, pending: pending.length, retryInMs: delayMs }, 'NOTIFY failed: the database is unreachable; retrying');
        await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
        delayMs = Math.min(delayMs * 2, MAX_RETRY_MS);
      }
    }
  };

  const encode = (topic: string, detail: unknown): string | undefined => {
    const inline = JSON.stringify({ o: origin, n: ++counter, t: topic, d: detail } satisfies Envelope);
    if (Buffer.byteLength(inline) < MAX_NOTIFY_BYTES) return inline;
    const pointer = options.shrink(topic, detail);
    const stand = pointer === undefined ? undefined : JSON.stringify({ o: origin, n: counter, t: topic, p: pointer } satisfies Envelope);
    if (stand !== undefined && Buffer.byteLength(stand) < MAX_NOTIFY_BYTES) return stand;
    warn({ topic, bytes: Buffer.byteLength(inline) }, 'an event is too large for NOTIFY and has no pointer; other processes will read it from the database');
    return undefined;
  };

  // A topic whose events wait behind a read from the database (a pointer) keeps its order:
  // its later events queue behind the read; other topics' go on at once. A read that takes
  // longer than `readTimeoutMs` (an outage the scope rides out for 45 s, a pooled connection
  // gone silently dead) is given up for a catch-up (`resync`), which makes the topic's
  // subscribers read what they missed themselves. At most MAX_WAITING events wait in all;
  // past that a topic's events are dropped and one catch-up is queued behind its backlog.
  const backlogs = new Map<string, { tail: Promise<void>; jobs: number; catchUpQueued: boolean }>();
  let waiting = 0;

  const enqueue = (topic: string, job: () => Promise<void> | void) => {
    let backlog = backlogs.get(topic);
    if (!backlog) backlogs.set(topic, (backlog = { tail: Promise.resolve(), jobs: 0, catchUpQueued: false }));
    const queue = backlog;
    queue.jobs++;
    waiting++;
    queue.tail = queue.tail
      .then(job)
      .catch((error: unknown) => warn({ err: error, topic }, 'reading an event back from the database failed'))
      .finally(() => {
        waiting--;
        if (--queue.jobs === 0) backlogs.delete(topic);
      });
    return queue;
  };

  /** What `read` resolves to, or TIMED_OUT (logged) when it takes longer than the limit. */
  const bounded = async <T>(read: Promise<T>, topic: string, what: string) => {
    const result = await within(read, readTimeoutMs);
    if (result === TIMED_OUT) warn({ topic, timeoutMs: readTimeoutMs }, `${what} took too long; given up`);
    return result;
  };

  const catchUp = async (topic: string) => {
    if (!options.resync || !listeners.has(topic)) return;
    // Timed out too: the streams' own reads (a gap, a quiet spell) repair.
    const detail = await bounded(options.resync(topic), topic, 'catching up');
    if (detail !== TIMED_OUT && detail !== undefined) listeners.deliver(topic, detail, log);
  };

  const expandAndDeliver = async (topic: string, pointer: unknown) => {
    if (!listeners.has(topic)) return;
    const detail = await bounded(options.expand(topic, pointer), topic, 'reading an event back from the database');
    if (detail === TIMED_OUT) return catchUp(topic);
    if (detail !== undefined) listeners.deliver(topic, detail, log);
  };

  const receive = (payload: string) => {
    let envelope: Envelope;
    try {
      envelope = JSON.parse(payload) as Envelope;
    } catch {
      return warn({ payload: payload.slice(0, 100) }, 'an unreadable notification was ignored');
    }
    const { t: topic, d: detail, p: pointer } = envelope;
    if (envelope.o === origin || !listeners.has(topic)) return;
    if (pointer === undefined && !backlogs.has(topic)) return listeners.deliver(topic, detail, log);
    if (waiting < MAX_WAITING) {
      enqueue(topic, pointer === undefined ? () => listeners.deliver(topic, detail, log) : () => expandAndDeliver(topic, pointer));
      return;
    }
    warn({ topic, waiting }, 'too many events waiting for reads from the database; dropping, subscribers catch up');
    if (backlogs.get(topic)?.catchUpQueued) return;
    const queue = enqueue(topic, () => {
      queue.catchUpQueued = false;
      return catchUp(topic);
    });
    queue.catchUpQueued = true;
  };

  // ------------------------------------------------------------------ the listener

  let listener: postgres.Sql | undefined;
  let connected = false;
  let everConnected = false;
  let reconnects = 0;
  let connecting: Promise<boolean> | undefined;
  let ping: { token: string; at: number } | undefined;
  let pings = 0;

  const onListen = () => {
    connected = true;
    if (everConnected) {
      reconnects++;
      log.info({ reconnects }, 'LISTEN re-established; subscribers catch up from the database');
      void resyncAll();
    }
    everConnected = true;
  };

  const resyncAll = () => listeners.resync(options.resync, log, warn);

  const connect = (): Promise<boolean> =>
    (connecting ??= (async () => {
      const old = listener;
      listener = undefined;
      connected = false;
      ping = undefined;
      if (old) void old.end({ timeout: 0 }).catch(() => {});
      const sql = postgres(options.listenUrl, {
        max: 1,
        onnotice: () => {},
        connect_timeout: CONNECT_TIMEOUT_S,
        connection: { application_name: 'kiln-events-listen' },
      });
      try {
        // Bounded, so that a connection that dies while it is being set up cannot stall the health check.
        const listening = (async () => {
          await sql.listen(pingChannel, (token) => {
            if (ping?.token === token) ping = undefined;
          });
          await sql.listen(channel, receive, onListen);
        })();
        if ((await within(listening, CONNECT_TIMEOUT_S * 1_000 + healthTimeoutMs)) === TIMED_OUT) throw new Error('LISTEN did not answer');
        if (closed) throw new Error('closed');
        listener = sql;
        return true;
      } catch (error) {
        void sql.end({ timeout: 0 }).catch(() => {});
        if (!closed) warn({ err: error }, 'LISTEN failed; retrying');
        return false;
      }
    })().finally(() => (connecting = undefined)));

  const check = async () => {
    if (closed) return;
    if (ping && Date.now() - ping.at > healthTimeoutMs) {
      warn({ afterMs: Date.now() - ping.at }, 'the event listener stopped receiving; reconnecting');
      if (!(await connect())) return;
    } else if (!listener && !(await connect())) {
      return;
    }
    if (ping) return;
    const token = String(++pings);
    const at = Date.now();
    ping = { token, at };
    const current = publisher;
    const sent = await within(
      current`select pg_notify(${pingChannel}, ${token})`.then(
        () => true,
        () => false,
      ),
      healthTimeoutMs,
    );
    if (sent === TIMED_OUT && current === publisher && !closed) {
      // The publisher, not the listener, is stuck: replace it and ping again on the next tick.
      if (ping?.token === token) ping = undefined;
      replacePublisher(Date.now() - at);
    }
    // A ping that failed outright (the database is away) stays pending: the listener is rebuilt if it does not come back.
  };
  let checking = false;
  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    void check().finally(() => (checking = false));
  }, healthCheckMs);
  timer.unref();

  return {
    addEventListener: (topic, callback) => void listeners.add(topic, callback),
    removeEventListener: (topic, callback) => void listeners.remove(topic, callback),
    dispatchEvent: (event) => {
      const detail = (event as CustomEvent).detail as unknown;
      listeners.deliver(event.type, detail, log);
      const payload = encode(event.type, detail);
      if (payload !== undefined) send(payload);
      return true;
    },
    start: async (timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!closed && !(await connect()) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      if (!listener) log.warn({ listenUrl: redact(options.listenUrl) }, 'LISTEN is not established yet; events from other processes arrive once it is');
    },
    get connected() {
      return connected && listener !== undefined;
    },
    get reconnects() {
      return reconnects;
    },
    close: async () => {
      clearInterval(timer);
      // What is waiting goes out first (the last status of a handed-back run, say), unless the database is away.
      await Promise.race([flushing, new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
      closed = true;
      await connecting;
      await Promise.all([listener?.end({ timeout: 1 }), publisher.end({ timeout: 1 })]);
      listener = undefined;
    },
  };
}


function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}
