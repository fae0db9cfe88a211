import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 whose existing connections can be made silently dead: after
 * `blackhole()` they stay open but nothing is forwarded either way (no FIN, no RST), as
 * when a failover or a proxy leaves a half-open socket behind, while new connections go
 * through as before.
 */
export async function startTcpProxy(target: { host: string; port: number }) {
  const pairs = new Set<{ client: Socket; upstream: Socket; live: boolean }>();
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    const pair = { client, upstream, live: true };
    pairs.add(pair);
    const close = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const socket of [client, upstream]) socket.on('error', close).on('close', close);
    client.on('data', (data: Buffer) => pair.live && upstream.write(data));
    upstream.on('data', (data: Buffer) => pair.live && client.write(data));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    port,
    /** `url` with its host and port replaced by the proxy's. */
    urlFor(url: string): string {
      const proxied = new URL(url);
      proxied.host = `127.0.0.1:${port}`;
      return proxied.toString();
    },
    /** Connections open now, and the ones that go silent after `blackhole()`. */
    get open(): number {
      return [...pairs].filter((pair) => pair.live).length;
    },
    /** Every connection open now stops forwarding, silently; later ones work. */
    blackhole() {
      for (const pair of pairs) pair.live = false;
    },
    close: async () => {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export type TcpProxy = Awaited<ReturnType<typeof startTcpProxy>>;
