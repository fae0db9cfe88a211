import { GraphQLError, NoSchemaIntrospectionCustomRule } from 'graphql';
import { isAsyncIterable, type Plugin, handleStreamOrSingleExecutionResult } from 'graphql-yoga';

// Production mode keeps the schema private unless ALLOW_INTROSPECTION=true: no
// introspection, no GraphiQL (server.ts), and no "Did you mean …?" hints, which would
// otherwise let anyone rebuild the schema field by field from error messages.

/** Hints as graphql-js words them: fields, arguments, types, enum values, variables. */
const SUGGESTION = /\s*Did you mean [^?]*\?/;
const SUGGESTIONS = new RegExp(SUGGESTION.source, 'g');

export function useSchemaPrivacy(): Plugin[] {
  const hide = <E extends Error>(errors: readonly E[]) =>
    errors.some((e) => SUGGESTION.test(e.message)) ? errors.map((e) => (e instanceof GraphQLError ? withoutSuggestion(e) : e)) : errors;
  const onResult = (payload: Parameters<typeof handleStreamOrSingleExecutionResult>[0]) =>
    handleStreamOrSingleExecutionResult(payload, ({ result, setResult }) => {
      if (result.errors?.length) setResult({ ...result, errors: hide(result.errors) });
    });
  return [
    {
      onValidate({ addValidationRule }) {
        addValidationRule(NoSchemaIntrospectionCustomRule);
        return ({ result, setResult }) => setResult([...hide(result)]);
      },
      // Variable values are checked at execution: an unknown enum value is hinted there.
      onExecute: () => ({ onExecuteDone: onResult }),
      // At subscribe only: a stream's events carry no hints (its variables were checked then), and
      // a wrapper around each stream would live as long as it does (shared-execution.ts).
      onSubscribe: () => ({
        onSubscribeResult: ({ result, setResult }) => {
          if (!isAsyncIterable(result) && result.errors?.length) setResult({ ...result, errors: hide(result.errors) });
        },
      }),
    },
  ];
}

function withoutSuggestion(error: GraphQLError): GraphQLError {
  if (!SUGGESTION.test(error.message)) return error;
  return new GraphQLError(error.message.replace(SUGGESTIONS, ''), {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    originalError: error.originalError,
    extensions: error.extensions,
  });
}
