import type { TypedDocumentString } from '../gql/graphql';
import { auth } from './auth';

// GraphQL over HTTP: POST /graphql on the page's own origin with the access token.
// A request refused as unauthenticated is retried once after a token refresh: refused with
// UNAUTHENTICATED, or answered with the AuthError member of a result union (what a mutation
// says once the session was ended elsewhere, e.g. by a sign-out of every session). A refused
// refresh signs the tab out.

export class GraphQLRequestError extends Error {}

/** What the page says when no GraphQL answer came: no network, or a proxy's error page instead of the API. */
export const UNAVAILABLE = 'The server is unavailable; try again.';

/** No GraphQL answer at all (the server or the network is down): worth trying again, unlike an answer that refuses. */
export class ServerUnavailableError extends GraphQLRequestError {
  constructor() {
    super(UNAVAILABLE);
  }
}

interface Response<T> {
  data?: T | null;
  errors?: { message: string; extensions?: { code?: string } }[];
}

async function post<T, V>(document: TypedDocumentString<T, V>, variables: V | undefined, token: string | null): Promise<Response<T>> {
  let response: globalThis.Response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query: document.toString(), variables }),
    });
  } catch {
    // Offline, connection refused or reset: fetch rejects with a TypeError ("Failed to fetch").
    throw new ServerUnavailableError();
  }
  // A GraphQL answer is JSON (application/json or application/graphql-response+json), whatever its
  // status; anything else (a gateway's 502 page, a plain-text 503) did not come from the API.
  if (!/\bjson\b/i.test(response.headers.get('content-type') ?? '')) throw new ServerUnavailableError();
  let body: Response<T>;
  try {
    body = (await response.json()) as Response<T>;
  } catch {
    throw new ServerUnavailableError();
  }
  if (!body || typeof body !== 'object' || (!body.errors?.length && !body.data)) throw new ServerUnavailableError();
  return body;
}

const unauthenticated = (response: Response<unknown>) =>
  (response.errors?.some((error) => error.extensions?.code === 'UNAUTHENTICATED') ?? false) ||
  Object.values(response.data ?? {}).some((field) => (field as { __typename?: unknown } | null)?.__typename === 'AuthError');

/** The data of an operation; GraphQL errors throw (expected failures are union members in the data). */
export async function request<T, V>(document: TypedDocumentString<T, V>, variables?: V): Promise<T> {
  let response = await post(document, variables, await auth.accessToken());
  if (unauthenticated(response) && auth.signedIn()) {
    await auth.refresh();
    response = await post(document, variables, await auth.accessToken());
  }
  if (response.errors?.length || !response.data) {
    throw new GraphQLRequestError(response.errors?.[0]?.message ?? 'The server did not answer.');
  }
  return response.data;
}

/** The cursor a connection's next page starts after, or null on its last page. */
export function nextPage(pageInfo: { hasNextPage: boolean; endCursor: string | null } | undefined): string | null {
  return pageInfo?.hasNextPage ? pageInfo.endCursor : null;
}

/** Anonymous operations (sign-in, sign-up, refresh) that must not wait for a token. */
export async function anonymousRequest<T, V>(document: TypedDocumentString<T, V>, variables: V): Promise<T> {
  const response = await post(document, variables, null);
  if (response.errors?.length || !response.data) {
    throw new GraphQLRequestError(response.errors?.[0]?.message ?? 'The server did not answer.');
  }
  return response.data;
}
