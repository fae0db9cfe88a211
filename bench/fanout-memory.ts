import { IDLE, log, idleMemory } from './support/fanout-clients.js';

// The memory of FANOUT_IDLE idle graphql-ws subscriptions against as many bare `ws`
// connections: server heap and RSS, settled by memory-reducing GCs (they compact the
// heap's pages, as V8's memory reducer does in a process gone idle). Right after a burst
// of connections, RSS also holds the pages their transient garbage left sparse and what
// the young generation grew to (about a third more here); an idle server gives most of
// that back by itself (45 s idle, one run here: 17.8 KiB a subscription against 15.6
// settled). Variables: bench/support/fanout-clients.ts.

export default async function memory(): Promise<void> {
  log(`memory of idle connections: ${IDLE} each, server RSS and heap settled (forced GC)`);
  const bare = await idleMemory('bare ws');
  const graphqlWs = await idleMemory('graphql-ws');
  // Below ~1 KiB a connection, the baseline is within what freed heap pages already held in RSS.
  const ratio = (a: number, b: number) => (b >= 1024 ? `×${(a / b).toFixed(1)}` : 'n/a (baseline below RSS granularity)');
  log(
    `  graphql-ws subscription vs bare ws connection: RSS ${ratio(graphqlWs.perConnection, bare.perConnection)}, heap ${ratio(graphqlWs.perConnectionHeap, bare.perConnectionHeap)}`,
  );
}

