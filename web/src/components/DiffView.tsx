import { useEffect, useRef } from 'react';
import type { GenerationDiffQuery } from '../gql/graphql';

type Diff = NonNullable<NonNullable<GenerationDiffQuery['generation']>['diff']>;

/** Changed files of a version against its parent, as unified patches. */
export function DiffView({ label, diff, onClose }: { label: string; diff: Diff | null; onClose: () => void }) {
  const heading = useRef<HTMLHeadingElement>(null);
  // Keyboard users land on what they asked for.
  useEffect(() => heading.current?.focus(), [diff]);
  return (
    <section className="diff stack" aria-label={`Changes in ${label}`}>
      <div className="row">
        <h3 ref={heading} tabIndex={-1} className="grow">
          Changes in {label}
        </h3>
        <button type="button" className="small secondary" onClick={onClose}>
          Close diff
        </button>
      </div>
      {!diff ? (
        <p className="muted">No diff for this version.</p>
      ) : (
        <>
          <p className="muted">
            <span className="added">+{diff.additions}</span> <span className="deleted">−{diff.deletions}</span> in {diff.files.length}{' '}
            {diff.files.length === 1 ? 'file' : 'files'}
            {diff.against ? '' : ' (everything is new)'}
          </p>
          {diff.files.map((file) => (
            <details key={file.path} open={diff.files.length <= 5}>
              <summary>
                <span className={`tag change-${file.change.toLowerCase()}`}>{file.change}</span> {file.path}{' '}
                <span className="added">+{file.additions}</span> <span className="deleted">−{file.deletions}</span>
              </summary>
              <pre className="patch">
                {(file.patch ?? '').split('\n').map((line, index) => (
                  <span key={index} className={lineClass(line)}>
                    {line}
                    {'\n'}
                  </span>
                ))}
              </pre>
            </details>
          ))}
        </>
      )}
    </section>
  );
}

function lineClass(line: string): string | undefined {
  if (line.startsWith('+++') || line.startsWith('---')) return 'meta';
  if (line.startsWith('+')) return 'added';
  if (line.startsWith('-')) return 'deleted';
  if (line.startsWith('@@')) return 'hunk';
  return undefined;
}
