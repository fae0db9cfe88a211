import { type FormEvent, useCallback, useEffect, useId, useRef, useState } from 'react';
import { request } from '../api/graphql';
import { describedBy, FieldError, type FieldErrors, fieldErrorsOf, FormAlert, noFieldErrors } from '../components/FieldError';
import { GenerationView } from '../components/GenerationView';
import { useFocusOnArrival } from '../focus';
import { Versions, type Version } from '../components/Versions';
import { ProjectDocument, type ProjectQuery, ProjectVersionsDocument, StartGenerationDocument } from '../gql/graphql';

type Project = NonNullable<ProjectQuery['project']>;
/** The form's one field, by the name a ValidationError's path gives it. */
const LABELS = { prompt: 'Prompt' };

/** One project: the prompt, the generation being watched, and the versions of its session. */
export function ProjectPage({ projectId }: { projectId: string }) {
  const [project, setProject] = useState<Project | null | undefined>(undefined);
  const [generations, setGenerations] = useState<Version[]>([]);
  const [currentId, setCurrentId] = useState<string | null>(null);
  const [newSession, setNewSession] = useState(false);
  const [error, setError] = useState<string | null>(null);
  /** The reasons a ValidationError gives (a prompt too long, …). */
  const [fieldErrors, setFieldErrors] = useState<FieldErrors>(noFieldErrors);
  const [busy, setBusy] = useState(false);
  /** The version a Retry opened: its own Cancel takes the focus, which would otherwise fall to the page. */
  const [retried, setRetried] = useState<string | null>(null);
  const heading = useFocusOnArrival<HTMLHeadingElement>(Boolean(project));
  const promptBox = useRef<HTMLTextAreaElement>(null);
  const fieldId = useId();

  const loadVersions = useCallback(async () => {
    try {
      const { project } = await request(ProjectVersionsDocument, { id: projectId });
      const list = project?.generations.edges.map((edge) => edge.node) ?? [];
      setGenerations(list);
      return list;
    } catch (failure) {
      setError((failure as Error).message);
      return [];
    }
  }, [projectId]);

  useEffect(() => {
    request(ProjectDocument, { id: projectId })
      .then(({ project }) => setProject(project))
      .catch((failure: Error) => setError(failure.message));
    void loadVersions().then((list) => setCurrentId((id) => id ?? list[0]?.id ?? null));
  }, [projectId, loadVersions]);

  const current = generations.find((generation) => generation.id === currentId);
  const sessionId = newSession ? null : (current?.sessionId ?? null);
  // Oldest first: v1 is where the session started.
  const versions = sessionId ? generations.filter((generation) => generation.sessionId === sessionId).reverse() : [];

  const show = async (id: string, { retried = false } = {}) => {
    setNewSession(false);
    setCurrentId(id);
    setRetried(retried ? id : null);
    await loadVersions();
  };

  const generate = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (busy) return;
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
        form.reset();
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

  if (project === undefined) return <p className="muted">{error ?? 'Loading project…'}</p>;
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
                placeholder={sessionId ? 'Ask for a change…' : 'Describe the app to build…'}
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
            <button type="submit" aria-disabled={busy}>
              Generate
            </button>
            <span className="muted">
              {sessionId ? `Follow-up in this session (version ${versions.length + 1})` : 'Starts a new session'}
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
      <div className="columns">
        <section className="grow" aria-label="Generation">
          {currentId ? (
            <GenerationView
              key={currentId}
              id={currentId}
              canEdit={canEdit}
              focusAction={currentId === retried}
              onSettled={() => void loadVersions()}
              onRetried={(id) => void show(id, { retried: true })}
            />
          ) : (
            <p className="muted">Nothing generated yet.</p>
          )}
        </section>
        {versions.length > 0 && <Versions versions={versions} currentId={currentId} canRestore={canEdit} onShow={(id) => void show(id)} />}
      </div>
    </div>
  );
}
