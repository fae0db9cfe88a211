/* eslint-disable */
/** Internal type. DO NOT USE DIRECTLY. */
type Exact<T extends { [key: string]: unknown }> = { [K in keyof T]: T[K] };
/** Internal type. DO NOT USE DIRECTLY. */
export type Incremental<T> = T | { [P in keyof T]?: P extends ' $fragmentName' | '__typename' ? T[P] : never };
import type { DocumentTypeDecoration } from '@graphql-typed-document-node/core';
/** Adds a user by email; adding an existing member again may change its role. */
export type AddProjectMemberInput = {
  email: string;
  projectId: string | number;
  role: ProjectRole;
};

export type ArchiveFormat =
  | 'TAR_GZ'
  | 'ZIP';

export type BuildStepStatus =
  | 'CANCELLED'
  | 'FAILED'
  | 'PENDING'
  | 'RUNNING'
  | 'SKIPPED'
  | 'SUCCEEDED';

export type CreateProjectInput = {
  description?: string | null | undefined;
  name: string;
  target: ProjectTarget;
};

export type DiagnosticSeverity =
  | 'ERROR'
  | 'INFO'
  | 'WARNING';

export type FileChange =
  | 'ADDED'
  | 'DELETED'
  | 'MODIFIED';

export type FixRoundStatus =
  | 'CANCELLED'
  | 'FAILED'
  | 'RUNNING'
  | 'SUCCEEDED';

export type GenerationErrorCode =
  /** The project's monthly token budget ran out. */
  | 'BUDGET_EXCEEDED'
  /** A build step exited with an error; see buildSteps and buildLog. */
  | 'BUILD_FAILED'
  /** An unexpected server error. */
  | 'INTERNAL'
  /** The worker stopped mid-run (a restart, a crash, the database away too long). A new generation (its retryOf is this one) retries it: after a restart each time up to its 10th try, after anything else once per chain of runs, and not when this was a user's retry. */
  | 'INTERRUPTED'
  /** The model's output broke the file protocol (e.g. an unterminated file). */
  | 'INVALID_OUTPUT'
  /** The model provider failed (HTTP error, rate limit, safety block, dropped stream). */
  | 'LLM_ERROR'
  /** A build step ran longer than its limit. */
  | 'TIMEOUT'
  /** A build tool is not installed on the worker. */
  | 'TOOLCHAIN_MISSING'
  /** The model wrote an unsafe path; nothing was written. */
  | 'UNSAFE_OUTPUT';

export type GenerationPhase =
  | 'BUILDING'
  | 'DONE'
  | 'FIXING'
  | 'GENERATING'
  | 'QUEUED'
  | 'WRITING';

export type GenerationStatus =
  | 'CANCELLED'
  | 'FAILED'
  | 'QUEUED'
  | 'RUNNING'
  | 'SUCCEEDED';

export type LogStream =
  | 'STDERR'
  | 'STDOUT';

export type MessageRole =
  | 'MODEL'
  | 'USER';

export type ProjectRole =
  /** Edits the project and starts or cancels generations. */
  | 'EDITOR'
  /** Everything, including members and budget. */
  | 'OWNER'
  /** Reads the project and its generations. */
  | 'VIEWER';

export type ProjectSecretName =
  /** The project's own Gemini key, used instead of the server's. */
  | 'GEMINI_API_KEY'
  /** The project's own key for the OpenAI-compatible provider. */
  | 'OPENAI_API_KEY';

export type ProjectTarget =
  /** A Flutter app (pubspec + lib/), built with flutter pub get, analyze and build web. */
  | 'FLUTTER'
  /** A Vite + React + TypeScript app, built with npm install, tsc and vite build. */
  | 'WEB';

export type RemoveProjectMemberInput = {
  projectId: string | number;
  /** The global id of the User to remove. */
  userId: string | number;
};

/** monthlyTokenLimit null removes the limit. */
export type SetProjectBudgetInput = {
  monthlyTokenLimit?: number | null | undefined;
  projectId: string | number;
};

/** value null deletes the secret. */
export type SetProjectSecretInput = {
  name: ProjectSecretName;
  projectId: string | number;
  value?: string | null | undefined;
};

export type SignOutScope =
  /** All of the user's sessions. */
  | 'GLOBAL'
  /** This session only (the default). */
  | 'LOCAL'
  /** All sessions but this one. */
  | 'OTHERS';

/**
 * Without sessionId a new session starts; Generation.sessionId tells which.
 * maxFixRounds: 0 turns self-healing off; null takes the server default; at most 5.
 */
export type StartGenerationInput = {
  maxFixRounds?: number | null | undefined;
  parentGenerationId?: string | number | null | undefined;
  projectId: string | number;
  prompt: string;
  sessionId?: string | number | null | undefined;
};

export type UpdateProjectInput = {
  description?: string | null | undefined;
  id: string | number;
  name?: string | null | undefined;
};

type ErrorFields_AuthError_Fragment = { __typename: 'AuthError', message: string };

type ErrorFields_BudgetExceededError_Fragment = { __typename: 'BudgetExceededError', message: string };

type ErrorFields_ForbiddenError_Fragment = { __typename: 'ForbiddenError', message: string };

type ErrorFields_InvalidStateError_Fragment = { __typename: 'InvalidStateError', message: string };

type ErrorFields_NotFoundError_Fragment = { __typename: 'NotFoundError', message: string };

type ErrorFields_RateLimitedError_Fragment = { __typename: 'RateLimitedError', message: string };

type ErrorFields_ValidationError_Fragment = { __typename: 'ValidationError', message: string };

export type ErrorFieldsFragment =
  | ErrorFields_AuthError_Fragment
  | ErrorFields_BudgetExceededError_Fragment
  | ErrorFields_ForbiddenError_Fragment
  | ErrorFields_InvalidStateError_Fragment
  | ErrorFields_NotFoundError_Fragment
  | ErrorFields_RateLimitedError_Fragment
  | ErrorFields_ValidationError_Fragment
;

export type SessionFieldsFragment = { accessToken: string, refreshToken: string, expiresAt: string, user: { id: string, email: string } };

export type SignUpMutationVariables = Exact<{
  email: string;
  password: string;
}>;


export type SignUpMutation = { signUp:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'AuthSession', accessToken: string, refreshToken: string, expiresAt: string, user: { id: string, email: string } }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type SignInMutationVariables = Exact<{
  email: string;
  password: string;
}>;


export type SignInMutation = { signIn:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'AuthSession', accessToken: string, refreshToken: string, expiresAt: string, user: { id: string, email: string } }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type RefreshSessionMutationVariables = Exact<{
  refreshToken: string;
}>;


export type RefreshSessionMutation = { refreshSession:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'AuthSession', accessToken: string, refreshToken: string, expiresAt: string, user: { id: string, email: string } }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type SignOutMutationVariables = Exact<{
  scope?: SignOutScope | null | undefined;
}>;


export type SignOutMutation = { signOut: boolean };

export type ViewerQueryVariables = Exact<{ [key: string]: never; }>;


export type ViewerQuery = { viewer: { id: string, email: string } | null };

export type ProjectFieldsFragment = { id: string, name: string, description: string | null, target: ProjectTarget, viewerRole: ProjectRole, createdAt: string, updatedAt: string, archivedAt: string | null };

export type CreateProjectMutationVariables = Exact<{
  input: CreateProjectInput;
}>;


export type CreateProjectMutation = { createProject:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'Project', id: string, name: string, description: string | null, target: ProjectTarget, viewerRole: ProjectRole, createdAt: string, updatedAt: string, archivedAt: string | null }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string, fieldErrors: Array<{ path: Array<string>, message: string }> }
   };

export type UpdateProjectMutationVariables = Exact<{
  input: UpdateProjectInput;
}>;


export type UpdateProjectMutation = { updateProject:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'Project', id: string, name: string, description: string | null, target: ProjectTarget, viewerRole: ProjectRole, createdAt: string, updatedAt: string, archivedAt: string | null }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type ArchiveProjectMutationVariables = Exact<{
  id: string | number;
}>;


export type ArchiveProjectMutation = { archiveProject:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'Project', id: string, name: string, description: string | null, target: ProjectTarget, viewerRole: ProjectRole, createdAt: string, updatedAt: string, archivedAt: string | null }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type AddProjectMemberMutationVariables = Exact<{
  input: AddProjectMemberInput;
}>;


export type AddProjectMemberMutation = { addProjectMember:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'ProjectMember', role: ProjectRole, user: { id: string, email: string } }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type RemoveProjectMemberMutationVariables = Exact<{
  input: RemoveProjectMemberInput;
}>;


export type RemoveProjectMemberMutation = { removeProjectMember:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'Project', id: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type SetProjectBudgetMutationVariables = Exact<{
  input: SetProjectBudgetInput;
}>;


export type SetProjectBudgetMutation = { setProjectBudget:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'Project', id: string, budget: { monthlyTokenLimit: number | null }, usage: { inputTokens: number, outputTokens: number, generationCount: number } }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type SetProjectSecretMutationVariables = Exact<{
  input: SetProjectSecretInput;
}>;


export type SetProjectSecretMutation = { setProjectSecret:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'Project', id: string, secrets: Array<{ name: ProjectSecretName, updatedAt: string }> }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type ProjectsQueryVariables = Exact<{
  first?: number | null | undefined;
  after?: string | null | undefined;
}>;


export type ProjectsQuery = { projects: { totalCount: number, pageInfo: { hasNextPage: boolean, endCursor: string | null }, edges: Array<{ cursor: string, node: { id: string, name: string, description: string | null, target: ProjectTarget, viewerRole: ProjectRole, createdAt: string, updatedAt: string, archivedAt: string | null } }> } };

export type ProjectQueryVariables = Exact<{
  id: string | number;
}>;


export type ProjectQuery = { project: { id: string, name: string, description: string | null, target: ProjectTarget, viewerRole: ProjectRole, createdAt: string, updatedAt: string, archivedAt: string | null, members: Array<{ role: ProjectRole, user: { id: string, email: string } }>, usage: { inputTokens: number, outputTokens: number, generationCount: number }, generations: { pageInfo: { hasNextPage: boolean, endCursor: string | null }, edges: Array<{ node: { id: string, status: GenerationStatus, prompt: string, createdAt: string } }> } } | null };

export type ConversationQueryVariables = Exact<{
  projectId: string | number;
  sessionId: string | number;
}>;


export type ConversationQuery = { project: { conversation: Array<{ role: MessageRole, content: string, createdAt: string, generation: { id: string } | null }> } | null };

export type GenerationFieldsFragment = { id: string, status: GenerationStatus, phase: GenerationPhase, prompt: string, sessionId: string, attempt: number, createdAt: string, startedAt: string | null, finishedAt: string | null, error: { code: GenerationErrorCode, message: string } | null, usage: { inputTokens: number, outputTokens: number } };

export type StartGenerationMutationVariables = Exact<{
  input: StartGenerationInput;
}>;


export type StartGenerationMutation = { startGeneration:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'BudgetExceededError', message: string, limit: number, used: number }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'Generation', id: string, status: GenerationStatus, phase: GenerationPhase, prompt: string, sessionId: string, attempt: number, createdAt: string, startedAt: string | null, finishedAt: string | null, error: { code: GenerationErrorCode, message: string } | null, usage: { inputTokens: number, outputTokens: number } }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string, retryAfterSeconds: number }
    | { __typename: 'ValidationError', message: string, fieldErrors: Array<{ path: Array<string>, message: string }> }
   };

export type CancelGenerationMutationVariables = Exact<{
  id: string | number;
}>;


export type CancelGenerationMutation = { cancelGeneration:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'Generation', id: string, status: GenerationStatus, phase: GenerationPhase, prompt: string, sessionId: string, attempt: number, createdAt: string, startedAt: string | null, finishedAt: string | null, error: { code: GenerationErrorCode, message: string } | null, usage: { inputTokens: number, outputTokens: number } }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type RetryGenerationMutationVariables = Exact<{
  id: string | number;
}>;


export type RetryGenerationMutation = { retryGeneration:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'BudgetExceededError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'Generation', id: string, status: GenerationStatus, phase: GenerationPhase, prompt: string, sessionId: string, attempt: number, createdAt: string, startedAt: string | null, finishedAt: string | null, error: { code: GenerationErrorCode, message: string } | null, usage: { inputTokens: number, outputTokens: number } }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type GenerationQueryVariables = Exact<{
  id: string | number;
}>;


export type GenerationQuery = { generation: { output: string, id: string, status: GenerationStatus, phase: GenerationPhase, prompt: string, sessionId: string, attempt: number, createdAt: string, startedAt: string | null, finishedAt: string | null, project: { id: string }, parent: { id: string } | null, retryOf: { id: string } | null, files: Array<{ path: string, size: number, sha256: string }>, buildSteps: Array<{ name: string, command: string, status: BuildStepStatus, exitCode: number | null, durationMs: number | null }>, buildLog: Array<{ seq: number, step: string, stream: LogStream, text: string }>, error: { code: GenerationErrorCode, message: string } | null, usage: { inputTokens: number, outputTokens: number } } | null };

export type GeneratedFileQueryVariables = Exact<{
  id: string | number;
  path: string;
}>;


export type GeneratedFileQuery = { generation: { file: { path: string, size: number, sha256: string, content: string } | null } | null };

export type GenerationChunksSubscriptionVariables = Exact<{
  id: string | number;
  afterSeq?: number | null | undefined;
}>;


export type GenerationChunksSubscription = { generationChunks: { seq: number, text: string } };

export type BuildLogsSubscriptionVariables = Exact<{
  id: string | number;
  afterSeq?: number | null | undefined;
}>;


export type BuildLogsSubscription = { buildLogs: { seq: number, step: string, stream: LogStream, text: string } };

export type GenerationUpdatedSubscriptionVariables = Exact<{
  id: string | number;
}>;


export type GenerationUpdatedSubscription = { generationUpdated: { id: string, status: GenerationStatus, phase: GenerationPhase, prompt: string, sessionId: string, attempt: number, createdAt: string, startedAt: string | null, finishedAt: string | null, error: { code: GenerationErrorCode, message: string } | null, usage: { inputTokens: number, outputTokens: number } } };

export type GenerationPreviewQueryVariables = Exact<{
  id: string | number;
}>;


export type GenerationPreviewQuery = { generation: { id: string, status: GenerationStatus, preview: { url: string, expiresAt: string } | null } | null };

export type GenerationArchiveQueryVariables = Exact<{
  id: string | number;
  format?: ArchiveFormat | null | undefined;
}>;


export type GenerationArchiveQuery = { generation: { id: string, archive: { url: string, expiresAt: string, filename: string } | null } | null };

export type GenerationDiffQueryVariables = Exact<{
  id: string | number;
  against?: string | number | null | undefined;
}>;


export type GenerationDiffQuery = { generation: { id: string, diff: { additions: number, deletions: number, against: { id: string } | null, files: Array<{ path: string, change: FileChange, additions: number, deletions: number, patch: string }> } | null } | null };

export type RestoreGenerationMutationVariables = Exact<{
  id: string | number;
}>;


export type RestoreGenerationMutation = { restoreGeneration:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'Generation', id: string, status: GenerationStatus, phase: GenerationPhase, prompt: string, sessionId: string, attempt: number, createdAt: string, startedAt: string | null, finishedAt: string | null, parent: { id: string } | null, restoredFrom: { id: string } | null, error: { code: GenerationErrorCode, message: string } | null, usage: { inputTokens: number, outputTokens: number } }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string }
   };

export type GenerationFixesQueryVariables = Exact<{
  id: string | number;
}>;


export type GenerationFixesQuery = { generation: { id: string, status: GenerationStatus, phase: GenerationPhase, error: { code: GenerationErrorCode, message: string } | null, diagnostics: Array<{ round: number, tool: string, severity: DiagnosticSeverity, path: string | null, line: number | null, column: number | null, code: string | null, message: string }>, fixRounds: Array<{ round: number, status: FixRoundStatus, startedAt: string, finishedAt: string | null, usage: { inputTokens: number, outputTokens: number } }> } | null };

export type GenerationChunksWithRoundSubscriptionVariables = Exact<{
  id: string | number;
  afterSeq?: number | null | undefined;
}>;


export type GenerationChunksWithRoundSubscription = { generationChunks: { seq: number, round: number, text: string } };

export type LatestGenerationQueryVariables = Exact<{
  id: string | number;
}>;


export type LatestGenerationQuery = { project: { id: string, generations: { edges: Array<{ node: { id: string, sessionId: string } }> } } | null };

export type ProjectVersionsQueryVariables = Exact<{
  id: string | number;
  sessionId: string | number;
  after?: string | null | undefined;
}>;


export type ProjectVersionsQuery = { project: { id: string, generations: { pageInfo: { hasNextPage: boolean, endCursor: string | null }, edges: Array<{ node: { id: string, status: GenerationStatus, prompt: string, createdAt: string, restoredFrom: { id: string } | null } }> } } | null };

export type BuildLogsWithRoundSubscriptionVariables = Exact<{
  id: string | number;
  afterSeq?: number | null | undefined;
}>;


export type BuildLogsWithRoundSubscription = { buildLogs: { seq: number, round: number, step: string, stream: LogStream, text: string } };

export type GenerationStepsQueryVariables = Exact<{
  id: string | number;
}>;


export type GenerationStepsQuery = { generation: { id: string, buildSteps: Array<{ name: string, round: number, status: BuildStepStatus, durationMs: number | null }> } | null };

export type RefreshSessionOrWaitMutationVariables = Exact<{
  refreshToken: string;
}>;


export type RefreshSessionOrWaitMutation = { refreshSession:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'AuthSession', accessToken: string, refreshToken: string, expiresAt: string, user: { id: string, email: string } }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string, retryAfterSeconds: number }
    | { __typename: 'ValidationError', message: string }
   };

export type GenerationWithLogQueryVariables = Exact<{
  id: string | number;
}>;


export type GenerationWithLogQuery = { generation: { output: string, id: string, status: GenerationStatus, phase: GenerationPhase, prompt: string, sessionId: string, attempt: number, createdAt: string, startedAt: string | null, finishedAt: string | null, buildLog: Array<{ seq: number, round: number, step: string, stream: LogStream, text: string }>, error: { code: GenerationErrorCode, message: string } | null, usage: { inputTokens: number, outputTokens: number } } | null };

export type SignUpWithFieldErrorsMutationVariables = Exact<{
  email: string;
  password: string;
}>;


export type SignUpWithFieldErrorsMutation = { signUp:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'AuthSession', accessToken: string, refreshToken: string, expiresAt: string, user: { id: string, email: string } }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string, fieldErrors: Array<{ path: Array<string>, message: string }> }
   };

export type SignInWithFieldErrorsMutationVariables = Exact<{
  email: string;
  password: string;
}>;


export type SignInWithFieldErrorsMutation = { signIn:
    | { __typename: 'AuthError', message: string }
    | { __typename: 'AuthSession', accessToken: string, refreshToken: string, expiresAt: string, user: { id: string, email: string } }
    | { __typename: 'ForbiddenError', message: string }
    | { __typename: 'InvalidStateError', message: string }
    | { __typename: 'NotFoundError', message: string }
    | { __typename: 'RateLimitedError', message: string }
    | { __typename: 'ValidationError', message: string, fieldErrors: Array<{ path: Array<string>, message: string }> }
   };

export class TypedDocumentString<TResult, TVariables>
  extends String
  implements DocumentTypeDecoration<TResult, TVariables>
{
  __apiType?: NonNullable<DocumentTypeDecoration<TResult, TVariables>['__apiType']>;
  private value: string;
  public __meta__?: Record<string, any> | undefined;

  constructor(value: string, __meta__?: Record<string, any> | undefined) {
    super(value);
    this.value = value;
    this.__meta__ = __meta__;
  }

  override toString(): string & DocumentTypeDecoration<TResult, TVariables> {
    return this.value;
  }
}
export const ErrorFieldsFragmentDoc = new TypedDocumentString(`
    fragment ErrorFields on Error {
  __typename
  message
}
    `, {"fragmentName":"ErrorFields"}) as unknown as TypedDocumentString<ErrorFieldsFragment, unknown>;
export const SessionFieldsFragmentDoc = new TypedDocumentString(`
    fragment SessionFields on AuthSession {
  accessToken
  refreshToken
  expiresAt
  user {
    id
    email
  }
}
    `, {"fragmentName":"SessionFields"}) as unknown as TypedDocumentString<SessionFieldsFragment, unknown>;
export const ProjectFieldsFragmentDoc = new TypedDocumentString(`
    fragment ProjectFields on Project {
  id
  name
  description
  target
  viewerRole
  createdAt
  updatedAt
  archivedAt
}
    `, {"fragmentName":"ProjectFields"}) as unknown as TypedDocumentString<ProjectFieldsFragment, unknown>;
export const GenerationFieldsFragmentDoc = new TypedDocumentString(`
    fragment GenerationFields on Generation {
  id
  status
  phase
  prompt
  sessionId
  attempt
  createdAt
  startedAt
  finishedAt
  error {
    code
    message
  }
  usage {
    inputTokens
    outputTokens
  }
}
    `, {"fragmentName":"GenerationFields"}) as unknown as TypedDocumentString<GenerationFieldsFragment, unknown>;
export const SignUpDocument = new TypedDocumentString(`
    mutation SignUp($email: String!, $password: String!) {
  signUp(input: {email: $email, password: $password}) {
    __typename
    ... on AuthSession {
      ...SessionFields
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment SessionFields on AuthSession {
  accessToken
  refreshToken
  expiresAt
  user {
    id
    email
  }
}`) as unknown as TypedDocumentString<SignUpMutation, SignUpMutationVariables>;
export const SignInDocument = new TypedDocumentString(`
    mutation SignIn($email: String!, $password: String!) {
  signIn(input: {email: $email, password: $password}) {
    __typename
    ... on AuthSession {
      ...SessionFields
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment SessionFields on AuthSession {
  accessToken
  refreshToken
  expiresAt
  user {
    id
    email
  }
}`) as unknown as TypedDocumentString<SignInMutation, SignInMutationVariables>;
export const RefreshSessionDocument = new TypedDocumentString(`
    mutation RefreshSession($refreshToken: String!) {
  refreshSession(input: {refreshToken: $refreshToken}) {
    __typename
    ... on AuthSession {
      ...SessionFields
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment SessionFields on AuthSession {
  accessToken
  refreshToken
  expiresAt
  user {
    id
    email
  }
}`) as unknown as TypedDocumentString<RefreshSessionMutation, RefreshSessionMutationVariables>;
export const SignOutDocument = new TypedDocumentString(`
    mutation SignOut($scope: SignOutScope) {
  signOut(scope: $scope)
}
    `) as unknown as TypedDocumentString<SignOutMutation, SignOutMutationVariables>;
export const ViewerDocument = new TypedDocumentString(`
    query Viewer {
  viewer {
    id
    email
  }
}
    `) as unknown as TypedDocumentString<ViewerQuery, ViewerQueryVariables>;
export const CreateProjectDocument = new TypedDocumentString(`
    mutation CreateProject($input: CreateProjectInput!) {
  createProject(input: $input) {
    __typename
    ... on Project {
      ...ProjectFields
    }
    ... on ValidationError {
      message
      fieldErrors {
        path
        message
      }
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment ProjectFields on Project {
  id
  name
  description
  target
  viewerRole
  createdAt
  updatedAt
  archivedAt
}`) as unknown as TypedDocumentString<CreateProjectMutation, CreateProjectMutationVariables>;
export const UpdateProjectDocument = new TypedDocumentString(`
    mutation UpdateProject($input: UpdateProjectInput!) {
  updateProject(input: $input) {
    __typename
    ... on Project {
      ...ProjectFields
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment ProjectFields on Project {
  id
  name
  description
  target
  viewerRole
  createdAt
  updatedAt
  archivedAt
}`) as unknown as TypedDocumentString<UpdateProjectMutation, UpdateProjectMutationVariables>;
export const ArchiveProjectDocument = new TypedDocumentString(`
    mutation ArchiveProject($id: ID!) {
  archiveProject(id: $id) {
    __typename
    ... on Project {
      ...ProjectFields
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment ProjectFields on Project {
  id
  name
  description
  target
  viewerRole
  createdAt
  updatedAt
  archivedAt
}`) as unknown as TypedDocumentString<ArchiveProjectMutation, ArchiveProjectMutationVariables>;
export const AddProjectMemberDocument = new TypedDocumentString(`
    mutation AddProjectMember($input: AddProjectMemberInput!) {
  addProjectMember(input: $input) {
    __typename
    ... on ProjectMember {
      role
      user {
        id
        email
      }
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}`) as unknown as TypedDocumentString<AddProjectMemberMutation, AddProjectMemberMutationVariables>;
export const RemoveProjectMemberDocument = new TypedDocumentString(`
    mutation RemoveProjectMember($input: RemoveProjectMemberInput!) {
  removeProjectMember(input: $input) {
    __typename
    ... on Project {
      id
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}`) as unknown as TypedDocumentString<RemoveProjectMemberMutation, RemoveProjectMemberMutationVariables>;
export const SetProjectBudgetDocument = new TypedDocumentString(`
    mutation SetProjectBudget($input: SetProjectBudgetInput!) {
  setProjectBudget(input: $input) {
    __typename
    ... on Project {
      id
      budget {
        monthlyTokenLimit
      }
      usage {
        inputTokens
        outputTokens
        generationCount
      }
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}`) as unknown as TypedDocumentString<SetProjectBudgetMutation, SetProjectBudgetMutationVariables>;
export const SetProjectSecretDocument = new TypedDocumentString(`
    mutation SetProjectSecret($input: SetProjectSecretInput!) {
  setProjectSecret(input: $input) {
    __typename
    ... on Project {
      id
      secrets {
        name
        updatedAt
      }
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}`) as unknown as TypedDocumentString<SetProjectSecretMutation, SetProjectSecretMutationVariables>;
export const ProjectsDocument = new TypedDocumentString(`
    query Projects($first: Int, $after: String) {
  projects(first: $first, after: $after) {
    totalCount
    pageInfo {
      hasNextPage
      endCursor
    }
    edges {
      cursor
      node {
        ...ProjectFields
      }
    }
  }
}
    fragment ProjectFields on Project {
  id
  name
  description
  target
  viewerRole
  createdAt
  updatedAt
  archivedAt
}`) as unknown as TypedDocumentString<ProjectsQuery, ProjectsQueryVariables>;
export const ProjectDocument = new TypedDocumentString(`
    query Project($id: ID!) {
  project(id: $id) {
    ...ProjectFields
    members {
      role
      user {
        id
        email
      }
    }
    usage {
      inputTokens
      outputTokens
      generationCount
    }
    generations(first: 20) {
      pageInfo {
        hasNextPage
        endCursor
      }
      edges {
        node {
          id
          status
          prompt
          createdAt
        }
      }
    }
  }
}
    fragment ProjectFields on Project {
  id
  name
  description
  target
  viewerRole
  createdAt
  updatedAt
  archivedAt
}`) as unknown as TypedDocumentString<ProjectQuery, ProjectQueryVariables>;
export const ConversationDocument = new TypedDocumentString(`
    query Conversation($projectId: ID!, $sessionId: ID!) {
  project(id: $projectId) {
    conversation(sessionId: $sessionId) {
      role
      content
      createdAt
      generation {
        id
      }
    }
  }
}
    `) as unknown as TypedDocumentString<ConversationQuery, ConversationQueryVariables>;
export const StartGenerationDocument = new TypedDocumentString(`
    mutation StartGeneration($input: StartGenerationInput!) {
  startGeneration(input: $input) {
    __typename
    ... on Generation {
      ...GenerationFields
    }
    ... on ValidationError {
      message
      fieldErrors {
        path
        message
      }
    }
    ... on BudgetExceededError {
      message
      limit
      used
    }
    ... on RateLimitedError {
      message
      retryAfterSeconds
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment GenerationFields on Generation {
  id
  status
  phase
  prompt
  sessionId
  attempt
  createdAt
  startedAt
  finishedAt
  error {
    code
    message
  }
  usage {
    inputTokens
    outputTokens
  }
}`) as unknown as TypedDocumentString<StartGenerationMutation, StartGenerationMutationVariables>;
export const CancelGenerationDocument = new TypedDocumentString(`
    mutation CancelGeneration($id: ID!) {
  cancelGeneration(id: $id) {
    __typename
    ... on Generation {
      ...GenerationFields
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment GenerationFields on Generation {
  id
  status
  phase
  prompt
  sessionId
  attempt
  createdAt
  startedAt
  finishedAt
  error {
    code
    message
  }
  usage {
    inputTokens
    outputTokens
  }
}`) as unknown as TypedDocumentString<CancelGenerationMutation, CancelGenerationMutationVariables>;
export const RetryGenerationDocument = new TypedDocumentString(`
    mutation RetryGeneration($id: ID!) {
  retryGeneration(id: $id) {
    __typename
    ... on Generation {
      ...GenerationFields
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment GenerationFields on Generation {
  id
  status
  phase
  prompt
  sessionId
  attempt
  createdAt
  startedAt
  finishedAt
  error {
    code
    message
  }
  usage {
    inputTokens
    outputTokens
  }
}`) as unknown as TypedDocumentString<RetryGenerationMutation, RetryGenerationMutationVariables>;
export const GenerationDocument = new TypedDocumentString(`
    query Generation($id: ID!) {
  generation(id: $id) {
    ...GenerationFields
    project {
      id
    }
    parent {
      id
    }
    retryOf {
      id
    }
    output
    files {
      path
      size
      sha256
    }
    buildSteps {
      name
      command
      status
      exitCode
      durationMs
    }
    buildLog(tail: 200) {
      seq
      step
      stream
      text
    }
  }
}
    fragment GenerationFields on Generation {
  id
  status
  phase
  prompt
  sessionId
  attempt
  createdAt
  startedAt
  finishedAt
  error {
    code
    message
  }
  usage {
    inputTokens
    outputTokens
  }
}`) as unknown as TypedDocumentString<GenerationQuery, GenerationQueryVariables>;
export const GeneratedFileDocument = new TypedDocumentString(`
    query GeneratedFile($id: ID!, $path: String!) {
  generation(id: $id) {
    file(path: $path) {
      path
      size
      sha256
      content
    }
  }
}
    `) as unknown as TypedDocumentString<GeneratedFileQuery, GeneratedFileQueryVariables>;
export const GenerationChunksDocument = new TypedDocumentString(`
    subscription GenerationChunks($id: ID!, $afterSeq: Int) {
  generationChunks(generationId: $id, afterSeq: $afterSeq) {
    seq
    text
  }
}
    `) as unknown as TypedDocumentString<GenerationChunksSubscription, GenerationChunksSubscriptionVariables>;
export const BuildLogsDocument = new TypedDocumentString(`
    subscription BuildLogs($id: ID!, $afterSeq: Int) {
  buildLogs(generationId: $id, afterSeq: $afterSeq) {
    seq
    step
    stream
    text
  }
}
    `) as unknown as TypedDocumentString<BuildLogsSubscription, BuildLogsSubscriptionVariables>;
export const GenerationUpdatedDocument = new TypedDocumentString(`
    subscription GenerationUpdated($id: ID!) {
  generationUpdated(generationId: $id) {
    ...GenerationFields
  }
}
    fragment GenerationFields on Generation {
  id
  status
  phase
  prompt
  sessionId
  attempt
  createdAt
  startedAt
  finishedAt
  error {
    code
    message
  }
  usage {
    inputTokens
    outputTokens
  }
}`) as unknown as TypedDocumentString<GenerationUpdatedSubscription, GenerationUpdatedSubscriptionVariables>;
export const GenerationPreviewDocument = new TypedDocumentString(`
    query GenerationPreview($id: ID!) {
  generation(id: $id) {
    id
    status
    preview {
      url
      expiresAt
    }
  }
}
    `) as unknown as TypedDocumentString<GenerationPreviewQuery, GenerationPreviewQueryVariables>;
export const GenerationArchiveDocument = new TypedDocumentString(`
    query GenerationArchive($id: ID!, $format: ArchiveFormat) {
  generation(id: $id) {
    id
    archive(format: $format) {
      url
      expiresAt
      filename
    }
  }
}
    `) as unknown as TypedDocumentString<GenerationArchiveQuery, GenerationArchiveQueryVariables>;
export const GenerationDiffDocument = new TypedDocumentString(`
    query GenerationDiff($id: ID!, $against: ID) {
  generation(id: $id) {
    id
    diff(against: $against) {
      against {
        id
      }
      additions
      deletions
      files {
        path
        change
        additions
        deletions
        patch
      }
    }
  }
}
    `) as unknown as TypedDocumentString<GenerationDiffQuery, GenerationDiffQueryVariables>;
export const RestoreGenerationDocument = new TypedDocumentString(`
    mutation RestoreGeneration($id: ID!) {
  restoreGeneration(id: $id) {
    __typename
    ... on Generation {
      ...GenerationFields
      parent {
        id
      }
      restoredFrom {
        id
      }
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment GenerationFields on Generation {
  id
  status
  phase
  prompt
  sessionId
  attempt
  createdAt
  startedAt
  finishedAt
  error {
    code
    message
  }
  usage {
    inputTokens
    outputTokens
  }
}`) as unknown as TypedDocumentString<RestoreGenerationMutation, RestoreGenerationMutationVariables>;
export const GenerationFixesDocument = new TypedDocumentString(`
    query GenerationFixes($id: ID!) {
  generation(id: $id) {
    id
    status
    phase
    error {
      code
      message
    }
    diagnostics {
      round
      tool
      severity
      path
      line
      column
      code
      message
    }
    fixRounds {
      round
      status
      startedAt
      finishedAt
      usage {
        inputTokens
        outputTokens
      }
    }
  }
}
    `) as unknown as TypedDocumentString<GenerationFixesQuery, GenerationFixesQueryVariables>;
export const GenerationChunksWithRoundDocument = new TypedDocumentString(`
    subscription GenerationChunksWithRound($id: ID!, $afterSeq: Int) {
  generationChunks(generationId: $id, afterSeq: $afterSeq) {
    seq
    round
    text
  }
}
    `) as unknown as TypedDocumentString<GenerationChunksWithRoundSubscription, GenerationChunksWithRoundSubscriptionVariables>;
export const LatestGenerationDocument = new TypedDocumentString(`
    query LatestGeneration($id: ID!) {
  project(id: $id) {
    id
    generations(first: 1) {
      edges {
        node {
          id
          sessionId
        }
      }
    }
  }
}
    `) as unknown as TypedDocumentString<LatestGenerationQuery, LatestGenerationQueryVariables>;
export const ProjectVersionsDocument = new TypedDocumentString(`
    query ProjectVersions($id: ID!, $sessionId: ID!, $after: String) {
  project(id: $id) {
    id
    generations(first: 100, after: $after, sessionId: $sessionId) {
      pageInfo {
        hasNextPage
        endCursor
      }
      edges {
        node {
          id
          status
          prompt
          createdAt
          restoredFrom {
            id
          }
        }
      }
    }
  }
}
    `) as unknown as TypedDocumentString<ProjectVersionsQuery, ProjectVersionsQueryVariables>;
export const BuildLogsWithRoundDocument = new TypedDocumentString(`
    subscription BuildLogsWithRound($id: ID!, $afterSeq: Int) {
  buildLogs(generationId: $id, afterSeq: $afterSeq) {
    seq
    round
    step
    stream
    text
  }
}
    `) as unknown as TypedDocumentString<BuildLogsWithRoundSubscription, BuildLogsWithRoundSubscriptionVariables>;
export const GenerationStepsDocument = new TypedDocumentString(`
    query GenerationSteps($id: ID!) {
  generation(id: $id) {
    id
    buildSteps {
      name
      round
      status
      durationMs
    }
  }
}
    `) as unknown as TypedDocumentString<GenerationStepsQuery, GenerationStepsQueryVariables>;
export const RefreshSessionOrWaitDocument = new TypedDocumentString(`
    mutation RefreshSessionOrWait($refreshToken: String!) {
  refreshSession(input: {refreshToken: $refreshToken}) {
    __typename
    ... on AuthSession {
      ...SessionFields
    }
    ... on RateLimitedError {
      message
      retryAfterSeconds
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment SessionFields on AuthSession {
  accessToken
  refreshToken
  expiresAt
  user {
    id
    email
  }
}`) as unknown as TypedDocumentString<RefreshSessionOrWaitMutation, RefreshSessionOrWaitMutationVariables>;
export const GenerationWithLogDocument = new TypedDocumentString(`
    query GenerationWithLog($id: ID!) {
  generation(id: $id) {
    ...GenerationFields
    output
    buildLog(tail: 1000) {
      seq
      round
      step
      stream
      text
    }
  }
}
    fragment GenerationFields on Generation {
  id
  status
  phase
  prompt
  sessionId
  attempt
  createdAt
  startedAt
  finishedAt
  error {
    code
    message
  }
  usage {
    inputTokens
    outputTokens
  }
}`) as unknown as TypedDocumentString<GenerationWithLogQuery, GenerationWithLogQueryVariables>;
export const SignUpWithFieldErrorsDocument = new TypedDocumentString(`
    mutation SignUpWithFieldErrors($email: String!, $password: String!) {
  signUp(input: {email: $email, password: $password}) {
    __typename
    ... on AuthSession {
      ...SessionFields
    }
    ... on ValidationError {
      message
      fieldErrors {
        path
        message
      }
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment SessionFields on AuthSession {
  accessToken
  refreshToken
  expiresAt
  user {
    id
    email
  }
}`) as unknown as TypedDocumentString<SignUpWithFieldErrorsMutation, SignUpWithFieldErrorsMutationVariables>;
export const SignInWithFieldErrorsDocument = new TypedDocumentString(`
    mutation SignInWithFieldErrors($email: String!, $password: String!) {
  signIn(input: {email: $email, password: $password}) {
    __typename
    ... on AuthSession {
      ...SessionFields
    }
    ... on ValidationError {
      message
      fieldErrors {
        path
        message
      }
    }
    ... on Error {
      ...ErrorFields
    }
  }
}
    fragment ErrorFields on Error {
  __typename
  message
}
fragment SessionFields on AuthSession {
  accessToken
  refreshToken
  expiresAt
  user {
    id
    email
  }
}`) as unknown as TypedDocumentString<SignInWithFieldErrorsMutation, SignInWithFieldErrorsMutationVariables>;