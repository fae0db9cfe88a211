import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import postgres from 'postgres';
import { parseConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { migrateDatabase } from '../src/db/migrate.js';
import type { EventBus } from '../src/events/bus.js';
import { createEventBus, type EventBusHandle } from '../src/events/index.js';
import { createLogger } from '../src/observability/logger.js';

// Delivery latency of the event bus at a steady 1,000 events/s: the in-process bus
// against the cross-process ones (EVENTS=postgres, EVENTS=redis), measured in the same
// run. For a cross-process bus the publisher and the subscriber are two bus instances
// with connections of their own, exactly as two processes have them (here they share
// one clock, so one-way latency needs no clock correction).
//
// PostgreSQL: TEST_DATABASE_URL (a throwaway database is created and dropped).
// Redis: TEST_REDIS_URL. A backend whose URL is unset is skipped.
// BUS_RATE (1000 events/s), BUS_SECONDS (5), BUS_WARMUP (500 events, not counted).

const RATE = Number(process.env.BUS_RATE ?? 1000);
const SECONDS = Number(process.env.BUS_SECONDS ?? 5);
const WARMUP = Number(process.env.BUS_WARMUP ?? 500);
const TOTAL = WARMUP + RATE * SECONDS;
/** A typical chunk batch: one chunk of ~120 characters. */
const TEXT = 'const greeting = `Hello, ${name}!`; // a line of generated code, about as long as a streamed chunk ';

const log = (line: string) => process.stdout.write(`${line}\n`);
const logger = createLogger('warn');

interface Result {
  name: string;
  p50: number;
  p99: number;
  max: number;
  lost: number;
}

/** Publishes TOTAL single-chunk batches on `publisher` at RATE/s and times their arrival on `subscriber`. */
async function measure(name: string, publisher: EventBus, subscriber: EventBus): Promise<Result> {
  const id = randomUUID();
  const sentAt = new Float64Array(TOTAL);
  const latency = new Float64Array(TOTAL).fill(Number.NaN);
  let received = 0;
  let done: () => void = () => {};
  const all = new Promise<void>((resolve) => (done = resolve));
  const events = subscriber.subscribe('generationChunks', id);
  const reading = (async () => {
    for await (const batch of events) {
      const now = performance.now();
      for (const { seq } of batch) {
        if (Number.isNaN(latency[seq]!)) latency[seq] = now - sentAt[seq]!;
        if (++received === TOTAL) done();
      }
    }
  })();
  await delay(200); // the subscription is in place (SUBSCRIBE to Redis is asynchronous)

  const start = performance.now();
  let next = 0;
  while (next < TOTAL) {
    const due = Math.min(TOTAL, Math.floor(((performance.now() - start) * RATE) / 1000) + 1);
    for (; next < due; next++) {
      sentAt[next] = performance.now();
      publisher.publish('generationChunks', id, [{ seq: next, text: TEXT }]);
    }
    await delay(1);
  }
  await Promise.race([all, delay(5_000)]);
  await events.return(undefined);
  await reading;

  const counted = [...latency.subarray(WARMUP)].filter((value) => !Number.isNaN(value)).sort((a, b) => a - b);
  const at = (q: number) => counted[Math.min(counted.length - 1, Math.floor(q * counted.length))] ?? Number.NaN;
  return { name, p50: at(0.5), p99: at(0.99), max: counted.at(-1) ?? Number.NaN, lost: TOTAL - WARMUP - counted.length };
}

export default async function bench(): Promise<void> {
  log(`bus delivery: ${RATE} events/s for ${SECONDS} s (+${WARMUP} warm-up), one ~120-character chunk per event`);
  const results: Result[] = [];

  const memory = await createEventBus(parseConfig({}), { db: undefined as never, url: undefined }, logger);
  results.push(await measure('memory (in-process)', memory.bus, memory.bus));
  await memory.close();

  const databaseUrl = process.env.TEST_DATABASE_URL;
  if (!databaseUrl) {
    log('postgres: skipped (set TEST_DATABASE_URL)');
  } else {
    const name = `kiln_bench_${randomBytes(4).toString('hex')}`;
    const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
    const url = new URL(databaseUrl);
    url.pathname = `/${name}`;
    const database = await openDatabase({ url: url.toString(), maxConnections: 2 });
    const handles: EventBusHandle[] = [];
    try {
      const config = parseConfig({ DATABASE_URL: url.toString(), EVENTS: 'postgres' });
      handles.push(await createEventBus(config, database, logger), await createEventBus(config, database, logger));
      results.push(await measure('postgres (LISTEN/NOTIFY)', handles[0]!.bus, handles[1]!.bus));
    } finally {
      await Promise.all(handles.map((handle) => handle.close()));
      await database.close();
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    }
  }

  const redisUrl = process.env.TEST_REDIS_URL;
  if (!redisUrl) {
    log('redis: skipped (set TEST_REDIS_URL)');
  } else {
    const config = parseConfig({ EVENTS: 'redis', REDIS_URL: redisUrl });
    // A confirmed SUBSCRIBE makes its topic catch up from the database, as in a server (an
    // embedded one here: the bench's generation is in none, so the catch-up finds nothing).
    const database = await openDatabase({});
    await migrateDatabase(database);
    const [a, b] = [await createEventBus(config, database, logger), await createEventBus(config, database, logger)];
    try {
      results.push(await measure('redis (PUBLISH/SUBSCRIBE)', a.bus, b.bus));
    } finally {
      await Promise.all([a.close(), b.close()]);
      await database.close();
    }
  }

  const base = results[0]!;
  const ms = (value: number) => `${value.toFixed(2).padStart(7)} ms`;
  log(`${'bus'.padEnd(28)} ${'p50'.padStart(10)} ${'p99'.padStart(10)} ${'max'.padStart(10)}  lost  added p99 over memory`);
  for (const r of results) {
    const added = r === base ? '' : `${(r.p99 - base.p99).toFixed(2)} ms`;
    log(`${r.name.padEnd(28)} ${ms(r.p50)} ${ms(r.p99)} ${ms(r.max)}  ${String(r.lost).padStart(4)}  ${added}`);
  }
}
