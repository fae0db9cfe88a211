import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { GraphQLError } from 'graphql';
import { createGraphQLError, type GraphQLParams, type Plugin } from 'graphql-yoga';

// Cross-site requests. A browser sends a "simple" request (a GET, or a POST of a form
// or text/plain) to another origin without asking first, so such a request must not
// run an operation:
// - POST bodies are JSON only (application/json, or application/graphql-response+json):
//   any other media type is refused with 415 before parsing, so no form or text/plain
//   POST is ever read. A JSON POST from another origin is preflighted, and CORS_ORIGINS
//   decides.
// - A GET (queries, and SSE subscriptions; Yoga refuses mutations over GET) must carry
//   a header no simple request can: Authorization (every signed-in client sends it),
//   or one of the usual CSRF headers for anonymous ones (@graphql-yoga/plugin-csrf-prevention).
// GraphiQL's page and the graphql-ws upgrade are answered before this point.

const JSON_MEDIA_TYPES = ['application/json', 'application/graphql-response+json'];
/** Headers that make a browser preflight the request; any one of them will do. */
const PREFLIGHTED_HEADERS = ['authorization', 'x-graphql-yoga-csrf', 'apollo-require-preflight', 'x-apollo-operation-name'];

export function useRequestPolicy(): Plugin[] {
  const csrf = useCSRFPrevention({ requestHeaders: PREFLIGHTED_HEADERS });
  return [
    {
      onRequestParse({ request, setRequestParser }) {
        // Kiln's own parsers: Yoga's would echo the JSON parser's message, and the start of the variables, back and into the log.
        if (request.method === 'GET') return setRequestParser(parseSearchParams);
        if (request.method !== 'POST') return;
        const mediaType = request.headers.get('content-type')?.split(';')[0]?.trim().toLowerCase() ?? '';
        if (!JSON_MEDIA_TYPES.includes(mediaType)) {
          throw createGraphQLError('GraphQL requests are POSTed as application/json.', {
            extensions: { code: 'UNSUPPORTED_MEDIA_TYPE', http: { status: 415 } },
          });
        }
        setRequestParser(parseJsonBody);
      },
    },
    {
      // The plugin's refusal carries no code, where every other refusal of a request has one.
      onRequestParse(payload) {
        try {
          return csrf.onRequestParse?.(payload);
        } catch (error) {
          if (!(error instanceof GraphQLError)) throw error;
          throw createGraphQLError(`${error.message}: a GET must carry Authorization or one of ${PREFLIGHTED_HEADERS.slice(1).join(', ')}.`, {
            extensions: { code: 'CSRF_HEADER_MISSING', http: { status: 403 } },
          });
        }
      },
    },
  ];
}

/**
 * The length of each POST's JSON body, by its request: the request keeps the body as sent for
 * as long as its operation runs, whitespace and all, which a measure of the params misses.
 */
const bodyLengths = new WeakMap<Request, number>();

/** The length of `request`'s body as read; undefined for a GET. */
export const bodyLengthOf = (request: Request): number | undefined => bodyLengths.get(request);

/** Records the length of `request`'s body, read by a parser that was handed a copy of it (useChunkedBodyLimit). */
export const noteBodyLength = (request: Request, length: number): void => void bodyLengths.set(request, length);

const badRequest = (message: string) => createGraphQLError(message, { extensions: { code: 'BAD_REQUEST', http: { status: 400 } } });

async function parseJsonBody(request: Request): Promise<GraphQLParams> {
  let text: string;
  let body: unknown;
  try {
    text = await request.text();
    body = JSON.parse(text);
  } catch {
    throw badRequest('The request body is not valid JSON.');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw badRequest('The request body must be one JSON object.');
  noteBodyLength(request, text.length);
  return body as GraphQLParams;
}

/** A GET's parameters, as Yoga reads them (an empty one is absent); `variables` and `extensions` are JSON. */
function parseSearchParams(request: Request): GraphQLParams {
  const params = new URL(request.url).searchParams;
  const json = (name: 'variables' | 'extensions') => {
    const text = params.get(name);
    if (!text) return undefined;
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw badRequest(`The ${name} parameter is not valid JSON.`);
    }
  };
  return { query: params.get('query') || undefined, operationName: params.get('operationName') || undefined, variables: json('variables'), extensions: json('extensions') };
}
