import { REFUSAL_LIMITS, type RefusalLimit } from '../../src/observability/metrics.js';

/** The value of one series of a scrape, by name and exact labels; undefined when the scrape has no such series. */
export function seriesValue(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** kiln_refusals_total of the Kiln at `url`, by limit: what each limit has turned away so far. */
export async function refusalCounts(url: string): Promise<Record<RefusalLimit, number | undefined>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Object.fromEntries(REFUSAL_LIMITS.map((limit) => [limit, seriesValue(text, `kiln_refusals_total{limit="${limit}"}`)])) as Record<RefusalLimit, number | undefined>;
}

/** Every limit at 0 but those given. */
export function refusedOnly(counts: Partial<Record<RefusalLimit, number>>): Record<RefusalLimit, number> {
  return Object.fromEntries(REFUSAL_LIMITS.map((limit) => [limit, counts[limit] ?? 0])) as Record<RefusalLimit, number>;
}
