import SchemaBuilder from '@pothos/core';
import DataloaderPlugin from '@pothos/plugin-dataloader';
import ErrorsPlugin from '@pothos/plugin-errors';
import RelayPlugin from '@pothos/plugin-relay';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import ValidationPlugin from '@pothos/plugin-validation';
import { GraphQLError } from 'graphql';
import {
  AuthError,
  ForbiddenError,
  InvalidStateError,
  NotFoundError,
  RateLimitedError,
  ValidationError,
} from '../errors.js';
import type { Context } from './context.js';
import { MAX_NODE_IDS, lenientDecodeGlobalID, loadNodes } from './schema/ids.js';

// Configuration only: the types live in schema/<domain>.ts (STYLE 1, 2).
export const builder = new SchemaBuilder<{
  Context: Context;
  AuthScopes: { signedIn: boolean };
  Scalars: { DateTime: { Input: Date; Output: Date } };
  Connection: { totalCount: number };
  DefaultEdgesNullability: false;
  DefaultNodeNullability: false;
  DefaultFieldNullability: false;
}>({
  defaultFieldNullability: false,
  // Relay after validation: Pothos maps arguments for the later plugin first, so validators
  // (ids.ts idFor) see the global ids relay decoded rather than the raw strings.
  plugins: [ScopeAuthPlugin, ErrorsPlugin, ValidationPlugin, RelayPlugin, DataloaderPlugin],
  scopeAuth: {
    authorizeOnSubscribe: true,
    authScopes: (ctx) => ({ signedIn: ctx.viewer !== null }),
    unauthorizedError: () =>
      new GraphQLError('Not signed in, or the session has ended.', { extensions: { code: 'UNAUTHENTICATED' } }),
  },
  relay: {
    clientMutationId: 'omit',
    cursorType: 'String',
    edgesFieldOptions: { nullable: false },
    nodeFieldOptions: { nullable: false },
    // A malformed or unknown id in node/nodes is null, never an error for the whole list.
    decodeGlobalID: lenientDecodeGlobalID,
    nodeQueryOptions: { resolve: async (_root, args, ctx, info): Promise<unknown> => (await loadNodes(nodeBuilder(), ctx, info, [args.id]))[0] },
    nodesQueryOptions: {
      description: `At most ${MAX_NODE_IDS} ids; null for each one the viewer cannot see. The query cost counts content fields (output, file contents) once for each id of a literal list, ${MAX_NODE_IDS} times for ids in a variable.`,
      resolve: (_root, args, ctx, info): Promise<unknown[]> => loadNodes(nodeBuilder(), ctx, info, args.ids),
    },
  },
  errors: {
    // Every result union carries these; fields add BudgetExceededError where it applies.
    defaultTypes: [ValidationError, AuthError, ForbiddenError, NotFoundError, InvalidStateError, RateLimitedError],
    directResult: true,
    unsafelyHandleInputErrors: true,
    defaultUnionOptions: { name: ({ fieldName }) => `${fieldName[0]!.toUpperCase()}${fieldName.slice(1)}Result` },
  },
  validation: {
    validationError: (result) =>
      new ValidationError(
        result.issues.map((issue) => ({
          path: (issue.path ?? []).map((p) => String(typeof p === 'object' ? p.key : p)).filter((p) => p !== 'input'),
          message: issue.message,
        })),
      ),
  },
});

/** The builder, for the relay helpers above (called at request time, once it exists). */
function nodeBuilder(): Parameters<typeof loadNodes>[0] {
  return builder as unknown as Parameters<typeof loadNodes>[0];
}

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});
