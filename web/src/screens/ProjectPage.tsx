import { type FormEvent, useCallback, useEffect, useId, useRef, useState } from 'react';
import { nextPage, request } from '../api/graphql';
import { follow } from '../api/live';
import { describedBy, FieldError, type FieldErrors, fieldErrorsOf, FormAlert, noFieldErrors } from '../components/FieldError';
import { GenerationView, TERMINAL } from '../components/GenerationView';
import { LoadFailed } from '../components/LoadFailed';
import { promptDraft } from '../drafts';
import { useFocusOnArrival } from '../focus';
import { type Older, Versions, type Version } from '../components/Versions';
import { GenerationUpdatedDocument, LatestGenerationDocument, ProjectDocument, type ProjectQuery, ProjectVersionsDocument, StartGenerationDocument } from '../gql/graphql';

type Project = NonNullable<ProjectQuery['project']>;
/** The form's one field, by the name a ValidationError's path gives it. */
const LABELS = { prompt: 'Prompt' };
/** What a session with no older versions to load shows under Versions. */
const NO_OLDER: Older = { after: null, loading: false, error: null };

/** The versions of one session loaded so far, newest first. */
interface SessionVersions {
  sessionId: string;
  list: Version[];
  /** The cursor after which older versions remain (null: none), whether they are loading, and why they failed. */
  older: Older;
  /** Older pages were loaded: a reload of the first page keeps them instead of forgetting them. */
  olderLoaded: boolean;
}

/** One project: the prompt, the generation being watched, and the versions of its session. */
export function ProjectPage({ projectId }: { projectId: string }) {
  const [project, setProject] = useState<Project | null | undefined>(undefined);
  /** Why the project could not be loaded (the page offers Retry), until it loads. */
  const [projectError, setProjectError] = useState<string | null>(null);
  /** The versions of the shown generation's session; undefined until they have loaded once, null while the project has none. */
  const [listed, setListed] = useState<SessionVersions | null | undefined>(undefined);
  /** Why the versions could not be loaded (the last ones known, if any, stay shown). */
  const [versionsError, setVersionsError] = useState<string | null>(null);
  /** The generation shown and its session; null until there is one. */
  const [shown, setShown] = useState<{ id: string; sessionId: string } | null>(null);
  /** The session whose versions the page lists: an answer about another one (the page moved on meanwhile) is dropped. */
  const wanted = useRef<string | null>(null);
  const [newSession, setNewSession] = useState(false);
  const [error, setError] = useState<string | null>(null);
  /** The reasons a ValidationError gives (a prompt too long, …). */
  const [fieldErrors, setFieldErrors] = useState<FieldErrors>(noFieldErrors);
  const [busy, setBusy] = useState(false);
  /** The version a Retry opened: its own Cancel takes the focus, which would otherwise fall to the page. */
  const [retried, setRetried] = useState<string | null>(null);
  // The page shows once the project and its versions answered (the versions may have failed).
  const ready = Boolean(project) && (listed !== undefined || versionsError !== null);
  const heading = useFocusOnArrival<HTMLHeadingElement>(ready);
  const promptBox = useRef<HTMLTextAreaElement>(null);
  /** The prompt this tab was writing here when its session ended (see drafts.ts). */
  const [draft] = useState(() => promptDraft.get(projectId));
  const fieldId = useId();
  const reasonId = useId();

  /** The first page of a session's versions (newest first) and the cursor after which older ones remain. */
  const firstPage = useCallback(
    async (sessionId: string) => {
      const { project } = await request(ProjectVersionsDocument, { id: projectId, sessionId });
      return { sessionId, list: project?.generations.edges.map((edge) => edge.node) ?? [], after: nextPage(project?.generations.pageInfo) };
    },
    [projectId],
  );

  /** Loads the first page of `sessionId`'s versions again; false when it failed (the reason is shown with a Retry). */
  const loadVersions = useCallback(
    async (sessionId: string) => {
      try {
        const first = await firstPage(sessionId);
        if (wanted.current === sessionId) {
          setListed((known) => withFirstPage(known, first));
          setVersionsError(null);
        }
        return true;
      } catch (failure) {
        if (wanted.current === sessionId) setVersionsError((failure as Error).message);
        return false;
      }
    },
    [firstPage],
  );

  /**
   * The project's newest generation, shown with the versions of its session; false when either
   * failed. Nothing of it shows until both answered: without its session's versions, the page
   * cannot tell what a Generate would continue.
   */
  const arrive = useCallback(async () => {
    try {
      const { project } = await request(LatestGenerationDocument, { id: projectId });
      const latest = project?.generations.edges[0]?.node;
      const first = latest ? await firstPage(latest.sessionId) : null;
      if (latest && first) {
        // Unless a generation was shown meanwhile (a second arrival, as React's strict mode makes).
        wanted.current ??= latest.sessionId;
        setShown((known) => known ?? { id: latest.id, sessionId: latest.sessionId });
        if (wanted.current === latest.sessionId) setListed((known) => withFirstPage(known, first));
      } else setListed((known) => known ?? null);
      setVersionsError(null);
      return true;
    } catch (failure) {
      setVersionsError((failure as Error).message);
      return false;
    }
  }, [projectId, firstPage]);

  /** The versions again: of the shown generation's session, or (none shown yet) the project's newest generation and its session. */
  const reloadVersions = () => (shown ? loadVersions(shown.sessionId) : arrive());

  /** The next page of older versions of the listed session: what Show older versions asks for. */
  const loadOlder = async () => {
    if (!listed?.older.after || listed.older.loading) return;
    const { sessionId, older } = listed;
    /** Changes the listed versions while they are still `sessionId`'s. */
    const update = (change: (known: SessionVersions) => SessionVersions) =>
      setListed((known) => (known?.sessionId === sessionId ? change(known) : known));
    update((known) => ({ ...known, older: { ...known.older, loading: true, error: null } }));
    try {
      const { project } = await request(ProjectVersionsDocument, { id: projectId, sessionId, after: older.after });
      const page: Version[] = project?.generations.edges.map((edge) => edge.node) ?? [];
      const after = nextPage(project?.generations.pageInfo);
      update((known) => ({ ...known, list: withOlder(known.list, page), olderLoaded: true, older: { after, loading: false, error: null } }));
    } catch (failure) {
      // Show older versions stays, to try again from the same page.
      update((known) => ({ ...known, older: { ...known.older, loading: false, error: (failure as Error).message } }));
    }
  };

  const loadProject = useCallback(async () => {
    try {
      const { project } = await request(ProjectDocument, { id: projectId });
      setProject(project);
      setProjectError(null);
      return true;
    } catch (failure) {
      setProjectError((failure as Error).message);
      return false;
    }
  }, [projectId]);

  /** Both loads, again after a failure: Retry. */
  const loadAll = async () => {
    const [loaded, listedNow] = await Promise.all([loadProject(), reloadVersions()]);
    return loaded && listedNow;
  };

  useEffect(() => {
    void loadProject();
    void arrive();
  }, [loadProject, arrive]);

  const currentId = shown?.id ?? null;
  /**
   * The session a Generate continues: none for a new one, else the shown generation's. Undefined
   * while it is not known (the versions failed before any was shown): a Generate then would
   * start a new session by mistake, so it waits.
   */
  const sessionId: string | null | undefined = newSession ? null : shown ? shown.sessionId : listed === undefined ? undefined : null;
  /** Whether the versions of that session are the ones loaded (its own list may not have answered yet). */
  const isListed = Boolean(sessionId) && listed?.sessionId === sessionId;
  // Oldest first: v1 is where the session started.
  const versions = isListed ? [...listed!.list].reverse() : [];
  const older = isListed ? listed!.older : NO_OLDER;

  // A listed version that runs while another is shown: its tag would say RUNNING for good, so the
  // list loads again when it ends (the version shown does that itself, through its view).
  const running = versions
    .filter((version) => !TERMINAL.has(version.status) && version.id !== currentId)
    .map((version) => version.id)
    .join(' ');
  useEffect(() => {
    if (!running || !sessionId) return;
    const stops = running.split(' ').map((id) =>
      follow({
        document: GenerationUpdatedDocument,
        variables: () => ({ id }),
        onData: ({ generationUpdated }) => {
          if (TERMINAL.has(generationUpdated.status)) void loadVersions(sessionId);
        },
      }),
    );
    return () => stops.forEach((stop) => stop());
  }, [running, sessionId, loadVersions]);

  /** Shows generation `id` of `session` (a retry or a restore stays in the session of what it retried or restored), and that session's versions. */
  const show = async (id: string, session: string, { retried = false } = {}) => {
    setNewSession(false);
    setShown({ id, sessionId: session });
    setRetried(retried ? id : null);
    wanted.current = session;
    await loadVersions(session);
  };

  const generate = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (busy || sessionId === undefined) return;
    const form = event.currentTarget;
    // Sent as written (a pasted snippet keeps its indentation); `required` lets spaces through.
    const prompt = String(new FormData(form).get('prompt'));
    if (!prompt.trim()) return setError('Write a prompt first: it has only spaces.');
    setBusy(true);
    setError(null);
    setFieldErrors(noFieldErrors);
    try {
      const { startGeneration } = await request(StartGenerationDocument, { input: { projectId, prompt, sessionId } });
      if (startGeneration.__typename === 'Generation') {
        // Emptied, not reset: a reset would bring back the draft the box started with.
        if (promptBox.current) promptBox.current.value = '';
        promptDraft.set(projectId, '');
        await show(startGeneration.id, startGeneration.sessionId);
        return;
      }
      setError(startGeneration.message);
      if (startGeneration.__typename === 'ValidationError') setFieldErrors(fieldErrorsOf(startGeneration.fieldErrors, LABELS));
    } catch (failure) {
      setError((failure as Error).message);
    } finally {
      setBusy(false);
    }
  };

  if (project === undefined && projectError !== null) {
    return (
      <div className="project">
        <LoadFailed message={`This project could not be loaded. ${projectError}`} retry={loadAll} />
      </div>
    );
  }
  if (project === undefined || (project !== null && !ready)) return <p className="muted">Loading project…</p>;
  if (project === null) return <p role="alert">This project does not exist or is not shared with you.</p>;
  // A viewer reads the project; starting, cancelling, retrying and restoring are for its owner and editors.
  const canEdit = project.viewerRole !== 'VIEWER';

  return (
    <div className="project">
      <div className="title-row">
        <h1 ref={heading} tabIndex={-1}>
          {project.name}
        </h1>
        <span className="tag">{project.target}</span>
      </div>
      {canEdit ? (
        <form className="card stack" onSubmit={(event) => void generate(event)}>
          <div className="field">
            <label>
              Prompt
              <textarea
                ref={promptBox}
                name="prompt"
                rows={3}
                required
                defaultValue={draft}
                onChange={(event) => promptDraft.set(projectId, event.currentTarget.value)}
                placeholder={sessionId ? 'Ask for a change…' : sessionId === null ? 'Describe the app to build…' : undefined}
                onKeyDown={(event) => {
                  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) event.currentTarget.form?.requestSubmit();
                }}
                {...describedBy(fieldId, fieldErrors.byField.prompt)}
              />
            </label>
            <FieldError id={fieldId} message={fieldErrors.byField.prompt} />
          </div>
          <FormAlert message={error} errors={fieldErrors} labels={LABELS} />
          <div className="row">
            <button type="submit" aria-disabled={busy || sessionId === undefined} aria-describedby={reasonId}>
              Generate
            </button>
            <span id={reasonId} className="muted">
              {sessionId === undefined
                ? 'Generate waits for the versions: without them, it cannot tell which session to continue.'
                : !sessionId
                  ? 'Starts a new session'
                  : !isListed || versionsError !== null || older.after
                    ? 'Follow-up in this session'
                    : `Follow-up in this session (version ${versions.length + 1})`}
            </span>
            {sessionId && (
              <button
                type="button"
                className="secondary"
                onClick={() => {
                  setNewSession(true);
                  // This button goes away with the session: the new session starts at its prompt.
                  promptBox.current?.focus();
                }}
              >
                New session
              </button>
            )}
          </div>
        </form>
      ) : (
        <>
          <p className="card muted">You can view this project. Only its owner and editors can generate, cancel, retry or restore versions.</p>
          {error && (
            <p role="alert" className="error">
              {error}
            </p>
          )}
        </>
      )}
      {versionsError !== null && (
        <LoadFailed
          message={`The versions could not be loaded. ${versionsError}`}
          label="Retry loading the versions"
          retry={reloadVersions}
          focusAfter={heading}
        />
      )}
      <div className="columns">
        <section className="grow" aria-label="Generation">
          {shown ? (
            <GenerationView
              key={shown.id}
              id={shown.id}
              canEdit={canEdit}
              focusAction={shown.id === retried}
              onSettled={() => void loadVersions(shown.sessionId)}
              onRetried={(id) => void show(id, shown.sessionId, { retried: true })}
            />
          ) : listed === undefined ? (
            <p className="muted">No version shown: the versions have not loaded.</p>
          ) : (
            <p className="muted">Nothing generated yet.</p>
          )}
        </section>
        {sessionId && (versions.length > 0 || older.after !== null) && (
          <Versions
            versions={versions}
            currentId={currentId}
            canRestore={canEdit}
            onShow={(id) => void show(id, sessionId)}
            older={older}
            onShowOlder={loadOlder}
          />
        )}
      </div>
    </div>
  );
}

/**
 * `known` with `first`, a new first page of a session's versions: the older versions loaded (or
 * loading) stay after it, with what Show older versions goes on from; otherwise the page
 * replaces the list, with its own cursor.
 */
function withFirstPage(known: SessionVersions | null | undefined, first: { sessionId: string; list: Version[]; after: string | null }): SessionVersions {
  if (known?.sessionId === first.sessionId && (known.olderLoaded || known.older.loading)) return { ...known, list: withOlder(first.list, known.list) };
  return { sessionId: first.sessionId, list: first.list, older: { after: first.after, loading: false, error: null }, olderLoaded: false };
}

/** `newer` (newest first) followed by the versions of `older` it does not hold. */
function withOlder(newer: Version[], older: Version[]): Version[] {
  const ids = new Set(newer.map((generation) => generation.id));
  return [...newer, ...older.filter((generation) => !ids.has(generation.id))];
}
