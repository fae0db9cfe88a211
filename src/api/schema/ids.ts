import { decodeGlobalID } from '@pothos/plugin-relay';
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
