import { decodeGlobalID, resolveNodes } from '@pothos/plugin-relay';
import { type GraphQLResolveInfo, isObjectType } from 'graphql';
import { z } from 'zod';
import { UUID } from '../../generations/store.js';
import { badInput } from './paging.js';

// Global ids are decoded by the relay plugin (`t.arg.globalID`, input `t.globalID`
// fields, node/nodes); these helpers say what a decoded id is worth here. Every
// node's database id is a uuid.

/** A global id as the relay plugin hands it to resolvers and validators. */
export interface GlobalId {
  typename: string;
  id: string;
}

/** The database id inside a global id of this type, or null for any other type or a malformed id. */
export function idOf(globalId: GlobalId, typename: string): string | null {
  return globalId.typename === typename && UUID.test(globalId.id) ? globalId.id.toLowerCase() : null;
}

/** `.validate()` of a globalID argument or input field: its database id; anything else is a ValidationError on that field's path. */
export const idFor = (typename: string) =>
  z
    .custom<GlobalId>((value) => idOf(value as GlobalId, typename) !== null, `Not a valid ${typename} id.`)
    .transform((value) => idOf(value, typename)!);

/** `.validate()` of a globalID argument read like an unknown id when it is malformed or of another type: null (existence is never revealed). */
export const idOrNullFor = (typename: string) => z.custom<GlobalId>().transform((value) => idOf(value, typename));

/** Pothos relay's decoder, except that a malformed id decodes to no type instead of failing the field. */
export function lenientDecodeGlobalID(globalId: string): GlobalId {
  try {
    return decodeGlobalID(globalId);
  } catch {
    return { typename: '', id: globalId };
  }
}

/** The most ids one `nodes` takes, as many as a page holds: the query cost counts each one's content. */
export const MAX_NODE_IDS = 100;

/**
 * `node` and `nodes`: each id that names a node type with a well-formed id is loaded
 * (in one batch per type); anything else is null, like an id the viewer may not see,
 * so one bad id never fails the others.
 */
export async function loadNodes(builder: Parameters<typeof resolveNodes>[0], ctx: object, info: GraphQLResolveInfo, ids: GlobalId[]): Promise<unknown[]> {
  if (ids.length > MAX_NODE_IDS) throw badInput(`nodes takes at most ${MAX_NODE_IDS} ids.`);
  const valid = ids.map(({ typename, id }) => {
    const type = typename ? info.schema.getType(typename) : undefined;
    return isObjectType(type) && type.getInterfaces().some((i) => i.name === 'Node') && UUID.test(id);
  });
  // Lower-cased as idOf does: a uuid in either case names one row, and the loaders match ids exactly.
  const wanted = ids.filter((_, index) => valid[index]).map(({ typename, id }) => ({ typename, id: id.toLowerCase() }));
  const loaded = await resolveNodes(builder, ctx, info, wanted);
  let next = 0;
  return valid.map((ok) => (ok ? loaded[next++] : null));
}
