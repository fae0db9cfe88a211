import { useEffect, useSyncExternalStore } from 'react';
import { auth } from './api/auth';
import { request } from './api/graphql';
import { disconnect } from './api/live';
import { promptDraft } from './drafts';
import { SignOutDocument } from './gql/graphql';
import { followLink, navigate, projectIdOf, usePath } from './router';
import { ProjectPage } from './screens/ProjectPage';
import { Projects } from './screens/Projects';
import { SignIn } from './screens/SignIn';

export function App() {
  const session = useSyncExternalStore(auth.subscribe, auth.state);
  const path = usePath();

  useEffect(() => {
    if (session.status === 'loading') void auth.refresh();
  }, [session.status]);

  if (session.status === 'loading') {
    return (
      <p className="centered" aria-live="polite">
        Loading…{session.notice && ` ${session.notice}`}
      </p>
    );
  }
  if (session.status === 'signedOut') return <SignIn ended={session.ended} />;

  const signOut = async () => {
    try {
      await request(SignOutDocument, {});
    } catch {
      // Unreachable server: the tokens are forgotten here all the same.
    }
    disconnect();
    promptDraft.clearAll();
    auth.clear();
    navigate('/');
  };
  const projectId = projectIdOf(path);
  return (
    <>
      <header className="topbar">
        <a href="/" className="brand" onClick={(event) => followLink(event, '/')}>
          Kiln
        </a>
        <span className="who">{session.user.email}</span>
        <button type="button" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      <main>{projectId ? <ProjectPage key={projectId} projectId={projectId} /> : <Projects />}</main>
    </>
  );
}
