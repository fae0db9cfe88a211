import { randomUUID } from 'node:crypto';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { parse, print } from 'graphql';
import { expect } from 'vitest';
import {
  CreateProjectDocument,
  type CreateProjectInput,
  type ProjectFieldsFragment,
  type ProjectRole,
  SignInDocument,
  SignUpDocument,
} from '../gql/graphql.js';
import type { GraphQLClient, GraphQLResponse, TestServer } from './server.js';

// Fixtures for the API suites: a fresh user (unique email) and project per test, made
// through GraphQL like a client would, so tests are independent and run in any order.

/** A GraphQL client for a Kiln composed by hand (startKiln), like TestServer's client. */
export function graphqlClient(baseUrl: string, token?: string): GraphQLClient {
  return clientOver((body, headers = {}) =>
    fetch(`${baseUrl}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  );
}

/** A GraphQL client whose every operation goes through `post`. */
export function clientOver(post: GraphQLClient['post']): GraphQLClient {
  const request = async <T, V>(doc: TypedDocumentNode<T, V>, variables?: V) =>
    (await (await post({ query: print(doc), variables })).json()) as GraphQLResponse<T>;
  return {
    post,
    request,
    expectNoErrors: async (doc, variables) => {
      const response = await request(doc, variables);
      if (response.errors?.length || !response.data) throw new Error(`GraphQL errors: ${JSON.stringify(response.errors)}`);
      return response.data;
    },
  };
}

/** What the fixtures need of a server: a way to make clients. */
export type ClientFactory = Pick<TestServer, 'client'>;

export const PASSWORD = 'correct horse battery staple';

/**
 * The window of the rate limits a test counts against. Windows are aligned to multiples of their
 * length since the epoch, so a count restarts at each boundary: one of 10 minutes fell during a
 * test (CI, 17:40 UTC), and the attempt that should have been refused was counted afresh. The
 * next boundary of this one is in 2033.
 */
export const WINDOW = 1_000_000_000;

export function uniqueEmail(label = 'user'): string {
  return `${label}-${randomUUID()}@example.com`;
}

/** A typed document for an operation the generated subset of test/gql does not have. */
export function document<T, V = Record<string, never>>(source: string): TypedDocumentNode<T, V> {
  return parse(source) as TypedDocumentNode<T, V>;
}

export interface TestUser {
  /** The Viewer id (the `sub` of the access token). */
  id: string;
  email: string;
  accessToken: string;
  refreshToken: string;
  expiresAt: string;
  /** A client that sends this user's access token. */
  client: GraphQLClient;
}

type Session = { accessToken: string; refreshToken: string; expiresAt: string; user: { id: string; email: string } };

function asUser(server: ClientFactory, session: Session): TestUser {
  return { ...session.user, ...session, client: server.client(session.accessToken) };
}

/** A new user with a session of its own. */
export async function signUp(server: ClientFactory, email = uniqueEmail()): Promise<TestUser> {
  const { signUp: result } = await server.client().expectNoErrors(SignUpDocument, { email, password: PASSWORD });
  if (result.__typename !== 'AuthSession') throw new Error(`sign-up failed: ${result.__typename}: ${result.message}`);
  return asUser(server, result);
}

/** Another session of an existing user. */
export async function signIn(server: ClientFactory, email: string, password = PASSWORD): Promise<TestUser> {
  const { signIn: result } = await server.client().expectNoErrors(SignInDocument, { email, password });
  if (result.__typename !== 'AuthSession') throw new Error(`sign-in failed: ${result.__typename}: ${result.message}`);
  return asUser(server, result);
}

export async function createProject(
  client: GraphQLClient,
  input: Partial<CreateProjectInput> = {},
): Promise<ProjectFieldsFragment> {
  const { createProject: result } = await client.expectNoErrors(CreateProjectDocument, {
    input: { name: `Project ${randomUUID().slice(0, 8)}`, target: 'WEB', ...input },
  });
  if (result.__typename !== 'Project') throw new Error(`createProject failed: ${result.__typename}: ${result.message}`);
  return result;
}

/** The `__typename` of a result union, with the value narrowed to that member. */
export function expectTypename<T extends { __typename: string }, N extends T['__typename']>(
  value: T,
  typename: N,
): Extract<T, { __typename: N }> {
  expect(value, JSON.stringify(value)).toMatchObject({ __typename: typename });
  return value as Extract<T, { __typename: N }>;
}

/** The single error of a response that must fail as a whole. */
export function onlyError<T>(response: GraphQLResponse<T>) {
  expect(response.errors, JSON.stringify(response)).toHaveLength(1);
  return response.errors![0]!;
}

// ------------------------------------------------------------ documents beyond the generated subset

export type ProjectDetails = ProjectFieldsFragment & { members: { role: ProjectRole; user: { id: string; email: string } }[] };

export const ProjectByIdDocument = document<{ project: ProjectDetails | null }, { id: string }>(/* GraphQL */ `
  query ProjectById($id: ID!) {
    project(id: $id) {
      id name description target viewerRole createdAt updatedAt archivedAt
      members { role user { id email } }
    }
  }
`);

export type NodeResult =
  | { __typename: 'Project'; id: string; name: string }
  | { __typename: 'User'; id: string; email: string }
  | { __typename: string; id: string };

export const NodeDocument = document<{ node: NodeResult | null }, { id: string }>(/* GraphQL */ `
  query NodeById($id: ID!) {
    node(id: $id) {
      __typename
      id
      ... on Project { name }
      ... on User { email }
    }
  }
`);

export type FieldErrors = { path: string[]; message: string }[];
/** A result union seen loosely: any member, with the fields of P when it is P. */
type WithFieldErrors<P> = Partial<Omit<P, '__typename'>> & { __typename: string; message?: string; fieldErrors?: FieldErrors };

export const SignUpWithFieldErrorsDocument = document<
  { signUp: WithFieldErrors<{ __typename: 'AuthSession'; user: { id: string; email: string } }> },
  { email: string; password: string }
>(/* GraphQL */ `
  mutation SignUpWithFieldErrors($email: String!, $password: String!) {
    signUp(input: { email: $email, password: $password }) {
      __typename
      ... on AuthSession { user { id email } }
      ... on ValidationError { fieldErrors { path message } }
      ... on Error { message }
    }
  }
`);

export const UpdateProjectWithFieldErrorsDocument = document<
  { updateProject: WithFieldErrors<{ __typename: 'Project'; id: string; name: string; description: string | null }> },
  { input: { id: string; name?: string | null; description?: string | null } }
>(/* GraphQL */ `
  mutation UpdateProjectWithFieldErrors($input: UpdateProjectInput!) {
    updateProject(input: $input) {
      __typename
      ... on Project { id name description }
      ... on ValidationError { fieldErrors { path message } }
      ... on Error { message }
    }
  }
`);

export const MutationFieldErrorsDocument = {
  archive: document<
    { archiveProject: WithFieldErrors<{ __typename: 'Project'; id: string; archivedAt: string | null }> },
    { id: string }
  >(/* GraphQL */ `
    mutation ArchiveWithFieldErrors($id: ID!) {
      archiveProject(id: $id) {
        __typename
        ... on Project { id archivedAt }
        ... on ValidationError { fieldErrors { path message } }
        ... on Error { message }
      }
    }
  `),
  addMember: document<
    { addProjectMember: WithFieldErrors<{ __typename: 'ProjectMember'; role: ProjectRole }> },
    { input: { projectId: string; email: string; role: ProjectRole } }
  >(/* GraphQL */ `
    mutation AddMemberWithFieldErrors($input: AddProjectMemberInput!) {
      addProjectMember(input: $input) {
        __typename
        ... on ProjectMember { role }
        ... on ValidationError { fieldErrors { path message } }
        ... on Error { message }
      }
    }
  `),
  removeMember: document<
    { removeProjectMember: WithFieldErrors<{ __typename: 'Project'; id: string }> },
    { input: { projectId: string; userId: string } }
  >(/* GraphQL */ `
    mutation RemoveMemberWithFieldErrors($input: RemoveProjectMemberInput!) {
      removeProjectMember(input: $input) {
        __typename
        ... on Project { id }
        ... on ValidationError { fieldErrors { path message } }
        ... on Error { message }
      }
    }
  `),
};
