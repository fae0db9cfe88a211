import { decodeGlobalID, resolveNodes } from '@pothos/plugin-relay';
import { type GraphQLResolveInfo, isObjectType } from 'graphql';
import { ValidationError } from '../../errors.js';

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The database id inside a global id of this type, or null for anything else. */
export function decodeId(globalId: string, typename: string): string | null {
  try {
    const { typename: found, id } = decodeGlobalID(globalId);
    return found === typename && uuid.test(id) ? id.toLowerCase() : null;
  } catch {
    return null;
  }
}

/** Like decodeId, for mutation inputs: a malformed id is a ValidationError on its path. */
export function parseId(globalId: string, typename: string, path: string[]): string {
  const id = decodeId(globalId, typename);
  if (!id) throw new ValidationError([{ path, message: `Not a valid ${typename} id.` }]);
  return id;
}

type DecodedId = { typename: string; id: string };

/** Pothos relay's decoder, except that a malformed id decodes to no type instead of failing the field. */
export function lenientDecodeGlobalID(globalId: string): DecodedId {
  try {
    return decodeGlobalID(globalId);
  } catch {
    return { typename: '', id: globalId };
  }
}

/**
 * `node` and `nodes`: each id that names a node type with a well-formed id is loaded
 * (in one batch per type); anything else is null, like an id the viewer may not see,
 * so one bad id never fails the others.
 */
export async function loadNodes(builder: Parameters<typeof resolveNodes>[0], ctx: object, info: GraphQLResolveInfo, ids: DecodedId[]): Promise<unknown[]> {
  const valid = ids.map(({ typename, id }) => {
    const type = typename ? info.schema.getType(typename) : undefined;
    return isObjectType(type) && type.getInterfaces().some((i) => i.name === 'Node') && uuid.test(id);
  });
  const loaded = await resolveNodes(builder, ctx, info, ids.filter((_, index) => valid[index]));
  let next = 0;
  return valid.map((ok) => (ok ? loaded[next++] : null));
}
