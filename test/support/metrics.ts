import { REFUSAL_LIMITS, type RefusalLimit } from '../../src/observability/metrics.js';

type Counts = Record<RefusalLimit, number | undefined>;

/** The value of one series of a scrape, by name and exact labels; undefined when the scrape has no such series. */
export function seriesValue(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** kiln_refusals_total in a scrape, by limit: what each limit has turned away so far. */
export function refusalsIn(text: string): Counts {
  return Object.fromEntries(REFUSAL_LIMITS.map((limit) => [limit, seriesValue(text, `kiln_refusals_total{limit="${limit}"}`)])) as Counts;
}

/** kiln_refusals_total of the Kiln at `url`, by limit. */
export async function refusalCounts(url: string): Promise<Counts> {
  return refusalsIn(await (await fetch(`${url}/metrics`)).text());
}

/** What each limit of the Kiln at `url` turned away since `before` (its refusalCounts then): a test's own, whatever tests before it did. */
export async function refusalsSince(url: string, before: Counts): Promise<Counts> {
  const now = await refusalCounts(url);
  return Object.fromEntries(REFUSAL_LIMITS.map((limit) => [limit, now[limit] === undefined || before[limit] === undefined ? undefined : now[limit] - before[limit]])) as Counts;
}

/** Every limit at 0 but those given. */
export function refusedOnly(counts: Partial<Record<RefusalLimit, number>>): Record<RefusalLimit, number> {
  return Object.fromEntries(REFUSAL_LIMITS.map((limit) => [limit, counts[limit] ?? 0])) as Record<RefusalLimit, number>;
}
