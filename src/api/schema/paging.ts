import { resolveCursorConnection } from '@pothos/plugin-relay';
import { GraphQLError } from 'graphql';
import { z } from 'zod';

// Relay connections over keyset pages ordered by (created_at, id), newest first:
// at most 100 a page, forward only, opaque string cursors. Pothos relay's
// resolveCursorConnection pages; this module says what a cursor holds and keeps the
// contract's answers where the helper's differ (a refused page size, an empty page).

interface Keyset {
  createdAt: Date;
  id: string;
}

interface ConnectionArgs {
  first?: number | null;
  after?: string | null;
  last?: number | null;
  before?: string | null;
}

/**
 * One page of `load`'s rows (asked for one more than the page, to know whether there is
 * a next one) with the list's totalCount. A bad page size or cursor is BAD_USER_INPUT.
 */
export async function keysetConnection<T extends Keyset>(
  args: ConnectionArgs,
  load: (page: { limit: number; after?: Keyset }) => Promise<{ rows: T[]; totalCount: number }>,
) {
  refuseUnsupported(args);
  let totalCount = 0;
  const page = await resolveCursorConnection({ args, toCursor }, async ({ after, limit }: { after?: string; limit: number }) => {
    const loaded = await load({ limit, after: parseCursor(after) });
    totalCount = loaded.totalCount;
    return loaded.rows;
  });
  // The helper repeats `after` (or '') as the cursors of an empty page; the contract has null.
  const empty = page.edges.length === 0;
  return {
    ...page,
    totalCount,
    pageInfo: { ...page.pageInfo, startCursor: empty ? null : page.pageInfo.startCursor, endCursor: empty ? null : page.pageInfo.endCursor },
  };
}

/** The helper would clamp or page backwards; a page size out of range is refused, and paging is forward only. */
function refuseUnsupported(args: ConnectionArgs) {
  if (args.last != null || args.before != null) throw badInput('Page forward with first/after.');
  if (args.first != null && (args.first < 0 || args.first > 100)) throw badInput('first must be between 0 and 100.');
}

function toCursor(row: Keyset): string {
  return Buffer.from(`${row.createdAt.toISOString()}|${row.id}`).toString('base64url');
}

// Year 0 is a valid ISO date but no PostgreSQL timestamp; Kiln never writes one.
const cursorShape = z.tuple([z.iso.datetime().refine((date) => !date.startsWith('0000')), z.uuid()]);

function parseCursor(cursor: string | undefined): Keyset | undefined {
  if (cursor === undefined) return undefined;
  const parsed = cursorShape.safeParse(Buffer.from(cursor, 'base64url').toString().split('|'));
  if (!parsed.success) throw badInput('That cursor is not valid.');
  return { createdAt: new Date(parsed.data[0]), id: parsed.data[1] };
}

export function badInput(message: string) {
  return new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT' } });
}
