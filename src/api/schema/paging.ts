import { GraphQLError } from 'graphql';
import { z } from 'zod';

// Relay connections over keyset pages ordered by (created_at, id), newest first:
// at most 100 a page, forward only, opaque string cursors.


export function pageSize(args: { first?: number | null; last?: number | null; before?: string | null }): number {
  if (args.last != null || args.before != null) throw badInput('Page forward with first/after.');
  const first = args.first ?? 20;
  if (first < 0 || first > 100) throw badInput('first must be between 0 and 100.');
  return first;
}

export function connection<T extends { createdAt: Date; id: string }>(rows: T[], first: number, totalCount: number, hasPrevious: boolean) {
  const edges = rows.slice(0, first).map((node) => ({ node, cursor: toCursor(node) }));
  return {
    edges,
    totalCount,
    pageInfo: {
      hasNextPage: rows.length > first,
      hasPreviousPage: hasPrevious,
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges.at(-1)?.cursor ?? null,
    },
  };
}

function toCursor(row: { createdAt: Date; id: string }): string {
  return Buffer.from(`${row.createdAt.toISOString()}|${row.id}`).toString('base64url');
}

const cursorShape = z.tuple([z.iso.datetime(), z.uuid()]);

export function parseCursor(cursor: string | null | undefined) {
  if (cursor == null) return undefined;
  const parsed = cursorShape.safeParse(Buffer.from(cursor, 'base64url').toString().split('|'));
  if (!parsed.success) throw badInput('That cursor is not valid.');
  return { createdAt: new Date(parsed.data[0]), id: parsed.data[1] };
}

function badInput(message: string) {
  return new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT' } });
}
