import { useEffect, useRef, useState } from 'react';
import { request } from '../api/graphql';
import { type GenerationDiffQuery, GenerationDiffDocument, type ProjectVersionsQuery, RestoreGenerationDocument } from '../gql/graphql';
import { DiffView } from './DiffView';

export type Version = NonNullable<ProjectVersionsQuery['project']>['generations']['edges'][number]['node'];
type Diff = NonNullable<NonNullable<GenerationDiffQuery['generation']>['diff']>;
/** The session's older versions: the cursor after which some remain (null: none), whether they are loading, and why they failed. */
export interface Older {
  after: string | null;
  loading: boolean;
  error: string | null;
}

/**
 * The versions of one session, oldest first, with a diff against the previous one and restore
 * (`canRestore`: not for a viewer of the project, whom the server would refuse), and Show older
 * versions above them while the session has older versions than those loaded.
 */
export function Versions({
  versions,
  currentId,
  canRestore,
  onShow,
  older,
  onShowOlder,
}: {
  versions: Version[];
  currentId: string | null;
  canRestore: boolean;
  onShow: (id: string) => void;
  older: Older;
  onShowOlder: () => Promise<void>;
}) {
  const [diff, setDiff] = useState<{ label: string; diff: Diff | null } | null>(null);
  const [error, setError] = useState<string | null>(null);
  /** A restore on its way: another press (a double click's second) would make a second version. */
  const [restoring, setRestoring] = useState(false);
  /** The Diff button that opened the diff: closing it returns the focus there, not to <body>. */
  const diffOpener = useRef<HTMLButtonElement | null>(null);
  const list = useRef<HTMLOListElement>(null);
  const heading = useRef<HTMLHeadingElement>(null);
  /**
   * Show older versions pressed: the oldest version before it (the focus goes to the first one
   * older than it; the button may go away), and whether its page was seen loading. Until it
   * was, the effect may be one of a render from before the press, and decides nothing.
   */
  const pendingOlder = useRef<{ oldest: string | null; seenLoading: boolean } | undefined>(undefined);
  useEffect(() => {
    const pending = pendingOlder.current;
    if (!pending) return;
    if (older.loading) {
      pending.seenLoading = true;
      return;
    }
    if (!pending.seenLoading) return;
    pendingOlder.current = undefined;
    const index = versions.findIndex((version) => version.id === pending.oldest);
    // The versions the page brought come before the one that was the oldest (all of them when there was none).
    const added = index < 0 ? versions.length : index;
    if (added > 0) list.current?.querySelectorAll<HTMLButtonElement>('li > button.link')[added - 1]?.focus();
    // A page that brought nothing new (the session's versions changed meanwhile): the focus does not fall to <body> with the button.
    else if (!older.after) heading.current?.focus();
  }, [versions, older.loading, older.after]);
  const latest = versions.at(-1)?.id;
  /**
   * A version's number in its session (v1: where it started), once no older pages remain; until
   * then older versions may come before it, so it goes by when it was made.
   */
  const nameOf = (version: Version, index: number) => {
    if (older.after === null) return { short: `v${index + 1}`, label: `version ${index + 1}` };
    const made = new Date(version.createdAt).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
    return { short: made, label: `the version of ${made}` };
  };
  const labelOf = (id: string) => {
    const index = versions.findIndex((version) => version.id === id);
    return index < 0 ? 'an earlier version' : nameOf(versions[index]!, index).short;
  };

  const showDiff = async (version: Version, label: string, opener: HTMLButtonElement) => {
    diffOpener.current = opener;
    setError(null);
    try {
      const { generation } = await request(GenerationDiffDocument, { id: version.id });
      setDiff({ label, diff: generation?.diff ?? null });
    } catch (failure) {
      setError((failure as Error).message);
    }
  };

  const restore = async (version: Version) => {
    if (restoring) return;
    setRestoring(true);
    setError(null);
    try {
      const { restoreGeneration } = await request(RestoreGenerationDocument, { id: version.id });
      if (restoreGeneration.__typename === 'Generation') {
        setDiff(null);
        onShow(restoreGeneration.id);
      } else setError(restoreGeneration.message);
    } catch (failure) {
      setError((failure as Error).message);
    } finally {
      setRestoring(false);
    }
  };

  return (
    <aside className="versions stack" aria-labelledby="versions-heading">
      <h2 id="versions-heading" ref={heading} tabIndex={-1}>
        Versions
      </h2>
      {older.after && (
        <div>
          <button
            type="button"
            className="small secondary"
            aria-disabled={older.loading}
            onClick={() => {
              if (older.loading) return;
              pendingOlder.current = { oldest: versions[0]?.id ?? null, seenLoading: false };
              void onShowOlder();
            }}
          >
            Show older versions
          </button>
        </div>
      )}
      {older.error && (
        <p role="alert" className="error">
          Older versions could not be loaded. {older.error}
        </p>
      )}
      <ol ref={list} className="list">
        {versions.map((version, index) => {
          const { short, label } = nameOf(version, index);
          return (
            <li key={version.id} aria-current={version.id === currentId ? 'true' : undefined}>
              <button type="button" className="link" onClick={() => onShow(version.id)} aria-label={`Show ${label}`}>
                {short}
              </button>{' '}
              <span className={`tag status-${version.status.toLowerCase()}`}>{version.status}</span>
              <p className="muted clamp">
                {version.restoredFrom ? `Restored from ${labelOf(version.restoredFrom.id)}` : version.prompt}
              </p>
              <div className="row">
                <button type="button" className="small secondary" aria-label={`Diff ${label}`} onClick={(event) => void showDiff(version, label, event.currentTarget)}>
                  Diff
                </button>
                {canRestore && version.status === 'SUCCEEDED' && version.id !== latest && (
                  <button type="button" className="small secondary" aria-label={`Restore ${label}`} aria-disabled={restoring} onClick={() => void restore(version)}>
                    Restore
                  </button>
                )}
              </div>
            </li>
          );
        })}
      </ol>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {diff && (
        <DiffView
          label={diff.label}
          diff={diff.diff}
          onClose={() => {
            setDiff(null);
            diffOpener.current?.focus();
          }}
        />
      )}
    </aside>
  );
}
