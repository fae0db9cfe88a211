import { type FormEvent, useCallback, useEffect, useId, useRef, useState } from 'react';
import { nextPage, request } from '../api/graphql';
import { describedBy, FieldError, type FieldErrors, fieldErrorsOf, FormAlert, noFieldErrors } from '../components/FieldError';
import { CreateProjectDocument, type ProjectFieldsFragment, ProjectsDocument, type ProjectTarget } from '../gql/graphql';
import { useFocusOnArrival } from '../focus';
import { followLink, navigate, projectPath } from '../router';

const TARGETS: ProjectTarget[] = ['WEB', 'FLUTTER'];
/** The form's fields, by the name a ValidationError's path gives them. */
const LABELS = { name: 'Project name', target: 'Target' };

/** The projects a page of the list holds: the most the API gives at once. */
const PAGE = 100;

/**
 * The list of projects: loading, loaded (with the cursor after which more remain, if any), or
 * failed with the reason (and a way to try again).
 */
type List =
  | { status: 'loading' }
  | { status: 'loaded'; projects: ProjectFieldsFragment[]; after: string | null }
  | { status: 'failed'; message: string };

export function Projects() {
  const [list, setList] = useState<List>({ status: 'loading' });
  /** A Retry of the list is under way: its button stays, busy, until the answer. */
  const [retrying, setRetrying] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [fieldErrors, setFieldErrors] = useState<FieldErrors>(noFieldErrors);
  const [busy, setBusy] = useState(false);
  /** Load more projects is under way, or why it failed (the button stays, to try again). */
  const [paging, setPaging] = useState<{ loading: boolean; error: string | null }>({ loading: false, error: null });
  const heading = useFocusOnArrival<HTMLHeadingElement>();
  const retryButton = useRef<HTMLButtonElement>(null);
  const listBox = useRef<HTMLUListElement>(null);
  /** The project whose link takes the focus after Load more (the first it added, else the last shown), as the button may go away with the last page. */
  const firstAdded = useRef<number | null>(null);
  const id = useId();

  const load = useCallback(async () => {
    try {
      const { projects } = await request(ProjectsDocument, { first: PAGE });
      // The Retry button that had the focus goes away with the error: the screen starts at its top again.
      if (document.activeElement === retryButton.current) heading.current?.focus();
      setList({ status: 'loaded', projects: projects.edges.map((edge) => edge.node), after: nextPage(projects.pageInfo) });
    } catch (failure) {
      setList({ status: 'failed', message: (failure as Error).message });
    }
  }, [heading]);

  useEffect(() => void load(), [load]);

  useEffect(() => {
    if (firstAdded.current === null) return;
    listBox.current?.children[firstAdded.current]?.querySelector('a')?.focus();
    firstAdded.current = null;
  }, [list]);

  const retry = async () => {
    if (retrying) return;
    setRetrying(true);
    await load();
    setRetrying(false);
  };

  /** The next page, after the last project shown (keyset cursors: a project created meanwhile moves nothing). */
  const loadMore = async () => {
    if (list.status !== 'loaded' || !list.after || paging.loading) return;
    setPaging({ loading: true, error: null });
    try {
      const { projects } = await request(ProjectsDocument, { first: PAGE, after: list.after });
      const shown = new Set(list.projects.map((project) => project.id));
      const added = projects.edges.map((edge) => edge.node).filter((project) => !shown.has(project.id));
      const after = nextPage(projects.pageInfo);
      if (added.length > 0) firstAdded.current = list.projects.length;
      // A last page with nothing new (the rest deleted meanwhile): the button goes, the focus stays at the list's end.
      else if (!after) firstAdded.current = list.projects.length - 1;
      setList({ status: 'loaded', projects: [...list.projects, ...added], after });
      setPaging({ loading: false, error: null });
    } catch (failure) {
      setPaging({ loading: false, error: (failure as Error).message });
    }
  };

  const create = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    // A second click while the first one's request runs would create a second project.
    if (busy) return;
    const form = new FormData(event.currentTarget);
    setBusy(true);
    setError(null);
    setFieldErrors(noFieldErrors);
    try {
      const { createProject } = await request(CreateProjectDocument, {
        input: { name: String(form.get('name')), target: form.get('target') as ProjectTarget },
      });
      if (createProject.__typename === 'Project') return navigate(projectPath(createProject.id));
      setError(createProject.message);
      if (createProject.__typename === 'ValidationError') setFieldErrors(fieldErrorsOf(createProject.fieldErrors, LABELS));
    } catch (failure) {
      setError((failure as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="narrow stack">
      <h1 ref={heading} tabIndex={-1}>
        Projects
      </h1>
      <form className="card stack" onSubmit={(event) => void create(event)}>
        <h2>New project</h2>
        <div className="row">
          <div className="grow field">
            <label>
              Project name
              <input name="name" required maxLength={100} {...describedBy(`${id}-name`, fieldErrors.byField.name)} />
            </label>
            <FieldError id={`${id}-name`} message={fieldErrors.byField.name} />
          </div>
          <div className="field">
            <label>
              Target
              <select name="target" defaultValue="WEB" {...describedBy(`${id}-target`, fieldErrors.byField.target)}>
                {TARGETS.map((target) => (
                  <option key={target} value={target}>
                    {target}
                  </option>
                ))}
              </select>
            </label>
            <FieldError id={`${id}-target`} message={fieldErrors.byField.target} />
          </div>
        </div>
        <FormAlert message={error} errors={fieldErrors} labels={LABELS} />
        <div>
          <button type="submit" aria-disabled={busy}>
            Create project
          </button>
        </div>
      </form>
      {list.status === 'loading' ? (
        <p className="muted">Loading projects…</p>
      ) : list.status === 'failed' ? (
        <div className="row">
          <p role="alert" className="error grow">
            Your projects could not be loaded. {list.message}
          </p>
          <button ref={retryButton} type="button" className="secondary" aria-disabled={retrying} onClick={() => void retry()}>
            Retry
          </button>
        </div>
      ) : list.projects.length === 0 ? (
        <p className="muted">No projects yet.</p>
      ) : (
        <>
          <ul ref={listBox} className="list" aria-label="Your projects">
            {list.projects.map((project) => (
              <li key={project.id}>
                <a href={projectPath(project.id)} onClick={(event) => followLink(event, projectPath(project.id))}>
                  {project.name}
                </a>
                <span className="tag">{project.target}</span>
              </li>
            ))}
          </ul>
          {paging.error && (
            <p role="alert" className="error">
              More projects could not be loaded. {paging.error}
            </p>
          )}
          {list.after && (
            <div>
              <button type="button" className="secondary" aria-disabled={paging.loading} onClick={() => void loadMore()}>
                Load more projects
              </button>
            </div>
          )}
        </>
      )}
    </div>
  );
}
