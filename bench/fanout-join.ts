import { N, RATE, JOIN, HISTORY, DRAIN_MS, log, ServerProcess, setUp, Recorder, graphqlWsSubscriber, bareWsSubscriber, openAll, percentile, fanout, type FanoutResult } from './support/fanout-clients.js';

// The graphql-ws fan-out while FANOUT_JOIN more viewers subscribe mid-stream, each
// replaying the generation's history (FANOUT_HISTORY persisted chunks) first: the live
// latency of the viewers already there against a bare `ws` broadcast, and whether every
// late viewer got every seq. Chunks are published from a second before the first join
// until a second after the last (at most JOIN_MAX_SECONDS), so every latency counted is
// one while viewers join.
// Variables: bench/support/fanout-clients.ts.

const JOIN_MAX_SECONDS = 20;

export default async function join(): Promise<void> {
  log(`join mid-stream: ${N} graphql-ws viewers live, then ${JOIN} more subscribe with a replay of ${HISTORY}+ chunks (chunks persisted first, as the pipeline does)`);
  const server = new ServerProcess();
  let base: FanoutResult;
  let joined: FanoutResult;
  try {
    const { url, wsUrl } = await server.ask({ cmd: 'start' });
    const { token, generations } = await setUp(url, 1);
    const generation = generations[0]!;
    base = await fanout(server, 'bare ws broadcast', 'ws', '', (_i, onChunk) => bareWsSubscriber(wsUrl, onChunk));
    await server.ask({ cmd: 'history', generationId: generation.uuid, count: HISTORY });
    const offset = await server.clockOffset();
    const viewers = new Recorder(N, offset, HISTORY + 1);
    const started = performance.now();
    const live = await openAll(N, (i) => graphqlWsSubscriber(url, token, generation.id, (seq, text) => viewers.record(i, seq, text), HISTORY - 1));
    await server.ask({ cmd: 'produce', target: 'kiln', generationId: generation.uuid, firstSeq: HISTORY, batches: 1, rate: RATE, persist: true });
    if (!(await viewers.until(HISTORY, 30_000))) throw new Error('join: not every viewer got the warm-up chunk');
    const connectMs = performance.now() - started;
    const late = new Recorder(JOIN, offset, Number.POSITIVE_INFINITY);
    const cpuBefore = (await server.ask({ cmd: 'cpu' })).micros;
    const producing = server.ask({ cmd: 'produce', target: 'kiln', generationId: generation.uuid, firstSeq: HISTORY + 1, batches: RATE * JOIN_MAX_SECONDS, rate: RATE, persist: true });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const joinStarted = performance.now();
    let joinMs = 0;
    const joiners = await server.profiled(`graphql-ws ${JOIN} joining`, async () => {
      const opened = await openAll(JOIN, (i) => graphqlWsSubscriber(url, token, generation.id, (seq, text) => late.record(i, seq, text)));
      joinMs = performance.now() - joinStarted;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return opened;
    });
    server.tell({ cmd: 'halt' });
    const { published } = await producing;
    const last = HISTORY + published;
    await Promise.all([viewers.until(last, DRAIN_MS), late.until(last, DRAIN_MS)]);
    const cpu = (await server.ask({ cmd: 'cpu' })).micros - cpuBefore;
    for (const subscriber of [...live, ...joiners]) subscriber.close();
    const sorted = viewers.latencies.sort((a, b) => a - b);
    const delivered = viewers.delivered(HISTORY + 1, last);
    joined = {
      name: `graphql-ws, ${JOIN} joining`,
      cpuPerMessage: cpu / Math.max(1, delivered * N * published + late.delivered(0, last) * JOIN * (last + 1)),
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      max: sorted.at(-1) ?? Number.NaN,
      delivered,
    };
    log(
      `  ${joined.name.padEnd(22)} p50 ${joined.p50.toFixed(2).padStart(8)} ms  p99 ${joined.p99.toFixed(2).padStart(8)} ms  max ${joined.max.toFixed(1).padStart(8)} ms  delivered ${(delivered * 100).toFixed(2)}%  server CPU ${joined.cpuPerMessage.toFixed(1)} µs/message  (subscribed in ${(connectMs / 1000).toFixed(1)} s)`,
    );
    log(`  the ${JOIN} late viewers: every seq 0..${last} delivered to ${(late.delivered(0, last) * 100).toFixed(2)}% (joined in ${(joinMs / 1000).toFixed(1)} s)`);
  } finally {
    await server.stop();
  }
  log(`  viewers' live latency while ${JOIN} join vs bare ws: p50 ×${(joined.p50 / base.p50).toFixed(1)}, p99 ×${(joined.p99 / base.p99).toFixed(1)}`);
}
