import { decodeGlobalID } from '@pothos/plugin-relay';
import { type DocumentNode, getOperationAST } from 'graphql';
import { type Plugin, isAsyncIterable } from 'graphql-yoga';
import type { Context } from './context.js';

// One log line per operation on every transport, on the operation's log (which
// already carries requestId and userId): its name and type, the project and
// generation it is about (decoded from the ids among its variables, never the
// variables themselves), how long it took and how many errors it had. Every later
// line of the operation (e.g. "unexpected error") carries the same fields.

export function useOperationLog(): Plugin<Context> {
  const begin = (ctx: Context, document: DocumentNode, operationName: string | null | undefined, variables: unknown) => {
    const operation = getOperationAST(document, operationName);
    ctx.log.bind({
      operationName: operation?.name?.value.slice(0, 100),
      operationType: operation?.operation,
      ...idsOf(variables),
    });
    return performance.now();
  };
  const errorCount = (result: unknown) => (result as { errors?: unknown[] } | undefined)?.errors?.length ?? 0;
  return {
    onExecute({ args }) {
      const ctx = args.contextValue as Context;
      const started = begin(ctx, args.document, args.operationName, args.variableValues);
      return {
        onExecuteDone({ result }) {
          const errors = isAsyncIterable(result) ? 0 : errorCount(result);
          ctx.log.info({ durationMs: Math.round(performance.now() - started), errors }, 'operation');
        },
      };
    },
    onSubscribe({ args }) {
      const ctx = args.contextValue as Context;
      begin(ctx, args.document, args.operationName, args.variableValues);
      return {
        onSubscribeResult({ result }) {
          const errors = isAsyncIterable(result) ? 0 : errorCount(result);
          ctx.log.info({ errors }, 'subscription');
        },
      };
    },
  };
}

const ID_FIELDS = ['id', 'projectId', 'generationId', 'parentGenerationId'];

/** projectId / generationId from the global ids in the variables (top level and one level down, e.g. `input`). */
function idsOf(variables: unknown): { projectId?: string; generationId?: string } {
  const ids: { projectId?: string; generationId?: string } = {};
  const visit = (value: unknown, depth: number) => {
    if (!value || typeof value !== 'object' || Array.isArray(value)) return;
    for (const [key, field] of Object.entries(value)) {
      if (typeof field === 'string' && ID_FIELDS.includes(key) && field.length < 200) {
        const decoded = decode(field);
        if (decoded?.typename === 'Project') ids.projectId ??= decoded.id;
        if (decoded?.typename === 'Generation' && key !== 'parentGenerationId') ids.generationId ??= decoded.id;
      } else if (depth === 0) {
        visit(field, 1);
      }
    }
  };
  visit(variables, 0);
  return ids;
}

function decode(globalId: string): { typename: string; id: string } | undefined {
  try {
    const { typename, id } = decodeGlobalID(globalId);
    return /^[0-9a-f-]{36}$/i.test(id) ? { typename, id: id.toLowerCase() } : undefined;
  } catch {
    return undefined;
  }
}
