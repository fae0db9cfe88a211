import { once } from 'node:events';
import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import { within } from '../deadlines.js';
import { type CrossProcessEventTarget, LocalListeners, throttledWarn } from './listeners.js';

// EVENTS=redis: @graphql-yoga/redis-event-target over two ioredis clients (a
// subscriber connection cannot publish). Each topic (`routingKey:id`) is a Redis
// channel, so a process receives only the generations it follows.
//
// What we add around the library:
// - publishing never throws or queues without bound: while Redis is unreachable an
//   event is dropped (and logged, throttled) — subscribers repair from the database;
// - the subscriber waits for Redis however long it takes (ioredis resubscribes every
//   channel on reconnect), and after a reconnect `resync` produces, per topic followed
//   here, an event that makes subscribers notice what they missed;
// - a silently dead socket (half-open after a failover, a proxy that stops forwarding)
//   is noticed: each connection is pinged every `healthCheckMs` (PING is allowed on a
//   subscriber connection), and ioredis's `socketTimeout` destroys a socket that has not
//   answered a command within `healthTimeoutMs`, so the client reconnects and resubscribes
//   as after any drop. The TCP keep-alive alone would take hours (ioredis's `keepAlive: 0`
//   keeps the kernel's default delay). Events published on the dead socket are sent again
//   by ioredis after it reconnects (possibly after other processes' catch-up events), or
//   dropped if it gives up; either way subscribers repair from the database.

export interface RedisEventTargetOptions {
  url: string;
  logger: Logger;
  resync?(topic: string): Promise<unknown>;
  healthCheckMs?: number;
  healthTimeoutMs?: number;
}

/** How long close() lets a ready client say goodbye (QUIT) before it cuts the socket. */
const QUIT_TIMEOUT_MS = 1_000;

export type RedisEventTarget = CrossProcessEventTarget;

export function createRedisEventBusTarget(options: RedisEventTargetOptions): RedisEventTarget {
  const log = options.logger.child({ source: 'RedisEvents' });
  const warn = throttledWarn(log);
  const retryStrategy = (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2_000);
  const healthCheckMs = options.healthCheckMs ?? 2_000;
  const socketTimeout = options.healthTimeoutMs ?? 5_000;
  // No offline queue: an event published during an outage is stale by the time Redis is back.
  const publishClient = new Redis(options.url, { enableOfflineQueue: false, retryStrategy, socketTimeout, connectionName: 'kiln-events-publish' });
  // SUBSCRIBE commands issued during an outage wait for the reconnect instead of failing.
  const subscribeClient = new Redis(options.url, { maxRetriesPerRequest: null, retryStrategy, socketTimeout, connectionName: 'kiln-events-subscribe' });
  for (const client of [publishClient, subscribeClient]) {
    client.on('error', (error: Error) => warn({ err: error }, 'Redis connection problem; retrying'));
  }
  // The library fires SUBSCRIBE/UNSUBSCRIBE without awaiting them; one rejected at
  // shutdown during an outage must not become an unhandled rejection.
  const quietSubscriber = new Proxy(subscribeClient, {
    get(client, property) {
      const value = Reflect.get(client, property) as unknown;
      if (property === 'subscribe' || property === 'unsubscribe') {
        return (...channels: string[]) =>
          (client[property] as (...c: string[]) => Promise<unknown>)(...channels).catch((error: unknown) =>
            warn({ err: error, channels }, `${property.toUpperCase()} failed`),
          );
      }
      return typeof value === 'function' ? value.bind(client) : value;
    },
  });
  const target = createRedisEventTarget<CustomEvent>({ publishClient, subscribeClient: quietSubscriber });
  const listeners = new LocalListeners();

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
      listeners.add(topic, callback);
      target.addEventListener(topic, callback ?? null);
    },
    removeEventListener: (topic, callback) => {
      listeners.remove(topic, callback);
      target.removeEventListener(topic, callback ?? null);
    },
    dispatchEvent: (event) => {
      // As the library's dispatchEvent, but a failed publish is logged instead of becoming an unhandled rejection.
      const detail = (event as CustomEvent).detail as unknown;
      publishClient
        .publish(event.type, detail === undefined ? '' : JSON.stringify(detail))
        .catch((error: unknown) => warn({ err: error, topic: event.type }, 'PUBLISH failed; subscribers will repair from the database'));
      return true;
    },
    start: async (timeoutMs = 10_000) => {
      const ready = (client: Redis) => (client.status === 'ready' ? Promise.resolve() : once(client, 'ready').then(() => {}));
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
