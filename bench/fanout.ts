import { N, RATE, SECONDS, PERSIST, log, ServerProcess, setUp, graphqlWsSubscriber, bareWsSubscriber, sseSubscriber, fanout, type FanoutResult } from './support/fanout-clients.js';

// Fan-out of one generation's chunks: FANOUT_N subscribers over graphql-ws and over SSE
// while chunks are published at a fixed rate, beside a bare `ws` broadcast of the same
// frames (the floor: no GraphQL, no auth, no stream logic). The server runs in a child
// process; the clients run here. Variables: bench/support/fanout-clients.ts.

export default async function latency(): Promise<void> {
  log(
    `fan-out: ${N} subscribers of one generation, ${RATE} one-chunk batches/s for ${SECONDS} s (latency publish → receipt; chunks ${PERSIST ? '' : 'not '}persisted first)`,
  );
  const server = new ServerProcess();
  let results: FanoutResult[];
  try {
    const { url, wsUrl } = await server.ask({ cmd: 'start' });
    const { token, generations } = await setUp(url, 2);
    const [forWs, forSse] = generations as [{ id: string; uuid: string }, { id: string; uuid: string }];
    results = [
      await fanout(server, 'bare ws broadcast', 'ws', '', (_i, onChunk) => bareWsSubscriber(wsUrl, onChunk)),
      await fanout(server, 'graphql-ws', 'kiln', forWs.uuid, (_i, onChunk) => graphqlWsSubscriber(url, token, forWs.id, onChunk)),
      await fanout(server, 'SSE', 'kiln', forSse.uuid, (_i, onChunk) => sseSubscriber(url, token, forSse.id, onChunk)),
    ];
  } finally {
    await server.stop();
  }
  const [base, ...others] = results;
  for (const other of others) {
    log(
      `  ${other.name} vs bare ws: p50 ×${(other.p50 / base!.p50).toFixed(1)}, p99 ×${(other.p99 / base!.p99).toFixed(1)}, server CPU per message ×${(other.cpuPerMessage / base!.cpuPerMessage).toFixed(1)}, delivered ${(other.delivered * 100).toFixed(2)}% vs ${(base!.delivered * 100).toFixed(2)}%`,
    );
  }

}
