import { type FormEvent, useCallback, useEffect, useId, useRef, useState } from 'react';
import { nextPage, request } from '../api/graphql';
import { follow } from '../api/live';
import { describedBy, FieldError, type FieldErrors, fieldErrorsOf, FormAlert, noFieldErrors } from '../components/FieldError';
import { GenerationView, TERMINAL } from '../components/GenerationView';
import { LoadFailed } from '../components/LoadFailed';
import { promptDraft } from '../drafts';
import { useFocusOnArrival } from '../focus';
import { type Older, Versions, type Version } from '../components/Versions';
import { GenerationUpdatedDocument, ProjectDocument, type ProjectQuery, ProjectVersionsDocument, StartGenerationDocument } from '../gql/graphql';

type Project = NonNullable<ProjectQuery['project']>;
/** The form's one field, by the name a ValidationError's path gives it. */
const LABELS = { prompt: 'Prompt' };

/** One project: the prompt, the generation being watched, and the versions of its session. */
export function ProjectPage({ projectId }: { projectId: string }) {
  const [project, setProject] = useState<Project | null | undefined>(undefined);
  /** Why the project could not be loaded (the page offers Retry), until it loads. */
  const [projectError, setProjectError] = useState<string | null>(null);
  /** The project's generations, newest first; null until the list has loaded once. */
  const [generations, setGenerations] = useState<Version[] | null>(null);
  /** Why the list of generations could not be loaded (the last one known, if any, stays shown). */
  const [versionsError, setVersionsError] = useState<string | null>(null);
  /** The cursor after which older generations remain (null: none), whether they are loading, and why they failed. */
  const [older, setOlder] = useState<Older>({ after: null, loading: false, error: null });
  /** Older pages were loaded: a reload of the first page keeps them instead of forgetting them. */
  const olderLoaded = useRef(false);
  const [currentId, setCurrentId] = useState<string | null>(null);
  /** The session of the generation shown, as its view reported it: known even when the list is not. */
  const [shownSession, setShownSession] = useState<{ id: string; sessionId: string } | null>(null);
  const [newSession, setNewSession] = useState(false);
  const [error, setError] = useState<string | null>(null);
  /** The reasons a ValidationError gives (a prompt too long, …). */
  const [fieldErrors, setFieldErrors] = useState<FieldErrors>(noFieldErrors);
  const [busy, setBusy] = useState(false);
  /** The version a Retry opened: its own Cancel takes the focus, which would otherwise fall to the page. */
  const [retried, setRetried] = useState<string | null>(null);
  // The page shows once the project and its versions answered (the versions may have failed).
  const ready = Boolean(project) && (generations !== null || versionsError !== null);
  const heading = useFocusOnArrival<HTMLHeadingElement>(ready);
  const promptBox = useRef<HTMLTextAreaElement>(null);
  /** The prompt this tab was writing here when its session ended (see drafts.ts). */
  const [draft] = useState(() => promptDraft.get(projectId));
  const fieldId = useId();
  const reasonId = useId();

  /** Loads the list of generations; null when it failed (the reason is shown with a Retry). */
  const loadVersions = useCallback(async () => {
    try {
      const { project } = await request(ProjectVersionsDocument, { id: projectId });
      const list = project?.generations.edges.map((edge) => edge.node) ?? [];
      // Keyset pages: newer generations only push the first page's last ones into what is already loaded.
      setGenerations((known) => (olderLoaded.current && known ? withOlder(list, known) : list));
      // Show older versions owns `older` while its pages load: this first page would re-enable it mid-way.
      if (!olderLoaded.current) setOlder((known) => (known.loading ? known : { after: nextPage(project?.generations.pageInfo), loading: false, error: null }));
      setVersionsError(null);
      setCurrentId((id) => id ?? list[0]?.id ?? null);
      return list;
    } catch (failure) {
      setVersionsError((failure as Error).message);
      return null;
    }
  }, [projectId]);

  /** Older pages, until one holds a version of `sessionId` (or none remain): what Show older versions asks for. */
  const loadOlder = async (sessionId: string) => {
    if (!older.after || older.loading) return;
    setOlder({ ...older, loading: true, error: null });
    let after: string | null = older.after;
    let loaded: Version[] = [];
    let error: string | null = null;
    try {
      while (after) {
        const { project } = await request(ProjectVersionsDocument, { id: projectId, after });
        const page: Version[] = project?.generations.edges.map((edge) => edge.node) ?? [];
        loaded = [...loaded, ...page];
        after = nextPage(project?.generations.pageInfo);
        if (page.some((generation) => generation.sessionId === sessionId)) break;
      }
    } catch (failure) {
      error = (failure as Error).message;
    }
    // The pages that did load stay, even when a later one failed: Show older versions goes on from there.
    if (loaded.length > 0) {
      olderLoaded.current = true;
      setGenerations((known) => withOlder(known ?? [], loaded));
    }
    setOlder({ after, loading: false, error });
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
  const loadAll = useCallback(async () => {
    const [loaded, list] = await Promise.all([loadProject(), loadVersions()]);
    return loaded && list !== null;
  }, [loadProject, loadVersions]);

  useEffect(() => void loadAll(), [loadAll]);

  const current = generations?.find((generation) => generation.id === currentId);
  /**
   * The session a Generate continues: none for a new one, else the shown generation's. Undefined
   * while it is not known (the list failed and the shown generation has not said): a Generate
   * then would start a new session by mistake, so it waits.
   */
  const sessionId: string | null | undefined = newSession
    ? null
    : currentId === null
      ? generations === null
        ? undefined
        : null
      : (current?.sessionId ?? (shownSession?.id === currentId ? shownSession.sessionId : undefined));
  // Oldest first: v1 is where the session started.
  const versions = sessionId && generations ? generations.filter((generation) => generation.sessionId === sessionId).reverse() : [];

  // A listed version that runs while another is shown: its tag would say RUNNING for good, so the
  // list loads again when it ends (the version shown does that itself, through its view).
  const running = versions
    .filter((version) => !TERMINAL.has(version.status) && version.id !== currentId)
    .map((version) => version.id)
    .join(' ');
  useEffect(() => {
    if (!running) return;
    const stops = running.split(' ').map((id) =>
      follow({
        document: GenerationUpdatedDocument,
        variables: () => ({ id }),
        onData: ({ generationUpdated }) => {
          if (TERMINAL.has(generationUpdated.status)) void loadVersions();
        },
      }),
    );
    return () => stops.forEach((stop) => stop());
  }, [running, loadVersions]);

  const show = async (id: string, { retried = false } = {}) => {
    setNewSession(false);
    setCurrentId(id);
    setRetried(retried ? id : null);
    await loadVersions();
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
        setShownSession({ id: startGeneration.id, sessionId: startGeneration.sessionId });
        await show(startGeneration.id);
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
                  : generations === null || versionsError !== null || older.after
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
          retry={async () => (await loadVersions()) !== null}
          focusAfter={heading}
        />
      )}
      <div className="columns">
        <section className="grow" aria-label="Generation">
          {currentId ? (
            <GenerationView
              key={currentId}
              id={currentId}
              canEdit={canEdit}
              focusAction={currentId === retried}
              onSettled={() => void loadVersions()}
              onSession={(sessionId) => setShownSession({ id: currentId, sessionId })}
              onRetried={(id) => void show(id, { retried: true })}
            />
          ) : generations === null ? (
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
            onShow={(id) => void show(id)}
            older={older}
            onShowOlder={() => loadOlder(sessionId)}
          />
        )}
      </div>
    </div>
  );
}

/** `newer` (newest first) followed by the generations of `older` it does not hold. */
function withOlder(newer: Version[], older: Version[]): Version[] {
  const ids = new Set(newer.map((generation) => generation.id));
  return [...newer, ...older.filter((generation) => !ids.has(generation.id))];
}
