import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { Redis, ReplyError } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import { within } from '../deadlines.js';
import { type CrossProcessEventTarget, LocalListeners, throttledWarn } from './listeners.js';

// EVENTS=redis: @graphql-yoga/redis-event-target over two ioredis clients (a
// subscriber connection cannot publish). Each topic (`routingKey:id`) is a Redis
// channel, so a process receives only the generations it follows.
//
// What we add around the library:
// - publishing never throws, and goes out in order: while the publisher reconnects,
//   events wait (up to MAX_PENDING, then the oldest go, logged) and are sent once it is
//   ready again. Other processes' subscribers did not drop, so nothing else would tell
//   them (the last status of a run, say) before their next poll of the database;
// - the library gets one callback per topic, which parses the message (an unreadable one
//   is logged and dropped) and hands it to this process's listeners, each guarded: a
//   stray message or a throwing listener never ends the process;
// - a SUBSCRIBE is in effect only once Redis has answered it, after the stream that asked
//   has read the database: what was published in between would be lost, so once it is
//   confirmed `resync` produces an event for the topic that makes subscribers catch up;
// - the subscriber waits for Redis however long it takes (ioredis resubscribes every
//   channel on reconnect), and after a reconnect `resync` produces, per topic followed
//   here, an event that makes subscribers notice what they missed;
// - a silently dead socket (half-open after a failover, a proxy that stops forwarding)
//   is noticed: each connection is pinged every `healthCheckMs` (PING is allowed on a
//   subscriber connection), and ioredis's `socketTimeout` destroys a socket that has not
//   answered a command within `healthTimeoutMs`, so the client reconnects and resubscribes
//   as after any drop. The TCP keep-alive alone would take hours (ioredis's `keepAlive: 0`
//   keeps the kernel's default delay). Events published on the dead socket are sent again
//   after it reconnects (possibly after other processes' catch-up events).

export interface RedisEventTargetOptions {
  url: string;
  logger: Logger;
  resync?(topic: string): Promise<unknown>;
  healthCheckMs?: number;
  healthTimeoutMs?: number;
}

/** How long close() lets a ready client send what waits and say goodbye (QUIT) before it cuts the socket. */
const QUIT_TIMEOUT_MS = 1_000;
/** Events waiting for the publisher to reconnect; past this the oldest are dropped (subscribers repair). */
const MAX_PENDING = 10_000;

export type RedisEventTarget = CrossProcessEventTarget;

export function createRedisEventBusTarget(options: RedisEventTargetOptions): RedisEventTarget {
  const log = options.logger.child({ source: 'RedisEvents' });
  const warn = throttledWarn(log);
  const retryStrategy = (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2_000);
  const healthCheckMs = options.healthCheckMs ?? 2_000;
  const socketTimeout = options.healthTimeoutMs ?? 5_000;
  // ioredis's offline queue is unbounded: events wait in `pending` instead (below).
  const publishClient = new Redis(options.url, { enableOfflineQueue: false, retryStrategy, socketTimeout, connectionName: 'kiln-events-publish' });
  // SUBSCRIBE commands issued during an outage wait for the reconnect instead of failing.
  const subscribeClient = new Redis(options.url, { maxRetriesPerRequest: null, retryStrategy, socketTimeout, connectionName: 'kiln-events-subscribe' });
  for (const client of [publishClient, subscribeClient]) {
    client.on('error', (error: Error) => warn({ err: error }, 'Redis connection problem; retrying'));
  }
  const listeners = new LocalListeners();
  let closed = false;

  // The library fires SUBSCRIBE/UNSUBSCRIBE without awaiting them: here a confirmed
  // SUBSCRIBE starts the topic's catch-up, and one rejected at shutdown during an outage
  // does not become an unhandled rejection.
  const quietSubscriber = new Proxy(subscribeClient, {
    get(client, property) {
      const value = Reflect.get(client, property) as unknown;
      if (property === 'subscribe' || property === 'unsubscribe') {
        return (...channels: string[]) =>
          (client[property] as (...c: string[]) => Promise<unknown>)(...channels).then(
            () => {
              if (property === 'subscribe' && !closed) void listeners.resync(options.resync, log, warn, channels);
            },
            (error: unknown) => warn({ err: error, channels }, `${property.toUpperCase()} failed`),
          );
      }
      return typeof value === 'function' ? value.bind(client) : value;
    },
  });
  // The message is parsed by `onMessage`, which knows its topic.
  const target = createRedisEventTarget<CustomEvent>({
    publishClient,
    subscribeClient: quietSubscriber,
    serializer: { stringify: JSON.stringify, parse: (message) => message },
  });
  /** The one callback of each topic with the library. */
  const onMessage = (event: CustomEvent) => {
    const message = event.detail as string | null;
    let detail: unknown = null;
    if (message !== null) {
      try {
        detail = JSON.parse(message);
      } catch {
        return warn({ topic: event.type, message: message.slice(0, 100) }, 'an unreadable message was ignored');
      }
    }
    listeners.deliver(event.type, detail, log);
  };

  // ------------------------------------------------------------------ publishing

  let pending: [channel: string, message: string][] = [];
  let flushing: Promise<void> | undefined;
  /** Wakes a flush that waits for the publisher to be ready (or for close). */
  let wake: (() => void) | undefined;
  publishClient.on('ready', () => wake?.());

  const publish = (channel: string, message: string) => {
    if (closed) return;
    if (pending.length >= MAX_PENDING) {
      pending.shift();
      warn({ pending: pending.length }, 'too many events waiting for Redis; dropping the oldest');
    }
    pending.push([channel, message]);
    flushing ??= flush();
  };

  // Started with something waiting, it awaits before it can end, so `flushing` is set by then;
  // it is cleared in the very step that finds nothing waiting, so no publish finds a flush that
  // has already stopped looking.
  const flush = async () => {
    try {
      while (pending.length > 0 && !closed) {
        if (publishClient.status !== 'ready') {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        const batch = pending;
        pending = [];
        // Issued together, so ioredis writes them to the one connection in order (a pipeline).
        const results = await Promise.allSettled(batch.map(([channel, message]) => publishClient.publish(channel, message)));
        const failed = batch.filter((_, i) => results[i]!.status === 'rejected');
        if (failed.length === 0) continue;
        const error = (results.find((result) => result.status === 'rejected') as PromiseRejectedResult).reason as unknown;
        if (error instanceof ReplyError) {
          // Redis refused them (not a lost connection): sending again would not help.
          warn({ err: error, lost: failed.length }, 'PUBLISH failed; subscribers will repair from the database');
          continue;
        }
        // The connection went: they go out first, in order, once it is back.
        pending = [...failed, ...pending].slice(-MAX_PENDING);
        warn({ err: error, pending: pending.length }, 'PUBLISH failed: Redis is unreachable; sending once it is back');
      }
    } finally {
      flushing = undefined;
    }
  };

  let readyOnce = false;
  let reconnects = 0;
  subscribeClient.on('ready', () => {
    if (!readyOnce) {
      readyOnce = true;
      return;
    }
    reconnects++;
    log.info({ reconnects }, 'Redis subscriber reconnected; subscribers catch up from the database');
    void resyncAll();
  });

  const resyncAll = () => listeners.resync(options.resync, log, warn);

  // The ping only has to be unanswered for `socketTimeout` to cut the socket; its error is that one.
  const timer = setInterval(() => {
    for (const client of [publishClient, subscribeClient]) {
      if (client.status === 'ready') client.ping().catch(() => {});
    }
  }, healthCheckMs);
  timer.unref();

  return {
    addEventListener: (topic, callback) => {
      if (listeners.add(topic, callback)) target.addEventListener(topic, onMessage);
    },
    removeEventListener: (topic, callback) => {
      if (listeners.remove(topic, callback)) target.removeEventListener(topic, onMessage);
    },
    dispatchEvent: (event) => {
      // As the library's dispatchEvent (the same encoding), through the queue above.
      const detail = (event as CustomEvent).detail as unknown;
      publish(event.type, detail === undefined ? '' : JSON.stringify(detail));
      return true;
    },
    start: async (timeoutMs = 10_000) => {
      // Not events.once: it rejects on the first 'error' (a refused connection), while ioredis goes on retrying.
      const ready = (client: Redis) => (client.status === 'ready' ? Promise.resolve() : new Promise<void>((resolve) => client.once('ready', () => resolve())));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
      const result = await Promise.race([Promise.all([ready(publishClient), ready(subscribeClient)]), timedOut]);
      clearTimeout(timer);
      if (result === 'timeout') log.warn('Redis is not reachable yet; events from other processes arrive once it is');
    },
    get connected() {
      return publishClient.status === 'ready' && subscribeClient.status === 'ready';
    },
    get reconnects() {
      return reconnects;
    },
    close: async () => {
      clearInterval(timer);
      // What is waiting goes out first (the last status of a handed-back run, say), unless Redis is away.
      if (flushing && publishClient.status === 'ready') await within(flushing, QUIT_TIMEOUT_MS);
      closed = true;
      wake?.();
      // QUIT would wait for a reconnect that may never come; only a ready client gets to say
      // goodbye, and not for long (its socket may be dead without anyone knowing yet).
      const end = async (client: Redis) => {
        if (client.status === 'ready') await within(client.quit().catch(() => {}), QUIT_TIMEOUT_MS);
        if (client.status !== 'end') client.disconnect();
      };
      await Promise.all([end(publishClient), end(subscribeClient)]);
    },
  };
}
