import { type FormEvent, useEffect, useState } from 'react';
import { request } from '../api/graphql';
import { CreateProjectDocument, type ProjectFieldsFragment, ProjectsDocument, type ProjectTarget } from '../gql/graphql';
import { useFocusOnArrival } from '../focus';
import { followLink, navigate, projectPath } from '../router';

const TARGETS: ProjectTarget[] = ['WEB', 'FLUTTER'];

export function Projects() {
  const [projects, setProjects] = useState<ProjectFieldsFragment[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const heading = useFocusOnArrival<HTMLHeadingElement>();

  useEffect(() => {
    request(ProjectsDocument, { first: 100 })
      .then(({ projects }) => setProjects(projects.edges.map((edge) => edge.node)))
      .catch((failure: Error) => setError(failure.message));
  }, []);

  const create = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setError(null);
    try {
      const { createProject } = await request(CreateProjectDocument, {
        input: { name: String(form.get('name')), target: form.get('target') as ProjectTarget },
      });
      if (createProject.__typename === 'Project') navigate(projectPath(createProject.id));
      else setError(createProject.message);
    } catch (failure) {
      setError((failure as Error).message);
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
          <label className="grow">
            Project name
            <input name="name" required maxLength={100} />
          </label>
          <label>
            Target
            <select name="target" defaultValue="WEB">
              {TARGETS.map((target) => (
                <option key={target} value={target}>
                  {target}
                </option>
              ))}
            </select>
          </label>
        </div>
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
        <div>
          <button type="submit">Create project</button>
        </div>
      </form>
      {projects === null ? (
        <p className="muted">Loading projects…</p>
      ) : projects.length === 0 ? (
        <p className="muted">No projects yet.</p>
      ) : (
        <ul className="list" aria-label="Your projects">
          {projects.map((project) => (
            <li key={project.id}>
              <a href={projectPath(project.id)} onClick={(event) => followLink(event, projectPath(project.id))}>
                {project.name}
              </a>
              <span className="tag">{project.target}</span>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
