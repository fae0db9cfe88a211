import { type ReactNode, useEffect, useRef, useState } from 'react';
import { request } from '../api/graphql';
import { follow } from '../api/live';
import {
  type BuildLogsWithRoundSubscription,
  BuildLogsWithRoundDocument,
  GenerationArchiveDocument,
  type GenerationArchiveQuery,
  GenerationChunksWithRoundDocument,
  type GenerationFieldsFragment,
  GenerationFixesDocument,
  type GenerationFixesQuery,
  GenerationPreviewDocument,
  GenerationStepsDocument,
  type GenerationStepsQuery,
  GenerationUpdatedDocument,
} from '../gql/graphql';

type LogLine = BuildLogsWithRoundSubscription['buildLogs'];
type Steps = NonNullable<GenerationStepsQuery['generation']>['buildSteps'];
type FixRounds = NonNullable<GenerationFixesQuery['generation']>['fixRounds'];
type Archive = NonNullable<NonNullable<GenerationArchiveQuery['generation']>['archive']>;

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

/** One generation, live: status and phase, model output, build log by step, preview and archive. */
export function GenerationView({ id, onSettled }: { id: string; onSettled: () => void }) {
  const [generation, setGeneration] = useState<GenerationFieldsFragment | null>(null);
  const [output, setOutput] = useState('');
  const [lines, setLines] = useState<LogLine[]>([]);
  const [steps, setSteps] = useState<Steps>([]);
  const [fixRounds, setFixRounds] = useState<FixRounds>([]);
  const [preview, setPreview] = useState<string | null>(null);
  const [archive, setArchive] = useState<Archive | null>(null);
  const [streamError, setStreamError] = useState<string | null>(null);
  const settled = generation !== null && TERMINAL.has(generation.status);
  const fixing = generation?.phase === 'FIXING';
  const outputRound = useRef(0);
  const onSettledRef = useRef(onSettled);
  onSettledRef.current = onSettled;

  useEffect(() => {
    const stops = [
      follow({
        document: GenerationUpdatedDocument,
        variables: () => ({ id }),
        onData: (data) => setGeneration(data.generationUpdated),
        onError: setStreamError,
      }),
      follow({
        document: GenerationChunksWithRoundDocument,
        variables: (afterSeq) => ({ id, afterSeq }),
        seqOf: (data) => data.generationChunks.seq,
        onData: ({ generationChunks: chunk }) => {
          // A fix round's answer starts under a line of its own.
          const heading = chunk.round > outputRound.current ? `\n\n── fix round ${chunk.round} ──\n\n` : '';
          outputRound.current = chunk.round;
          setOutput((text) => text + heading + chunk.text);
        },
        onError: setStreamError,
      }),
      follow({
        document: BuildLogsWithRoundDocument,
        variables: (afterSeq) => ({ id, afterSeq }),
        seqOf: (data) => data.buildLogs.seq,
        onData: (data) => setLines((list) => [...list, data.buildLogs]),
        onError: setStreamError,
      }),
    ];
    return () => stops.forEach((stop) => stop());
  }, [id]);

  // Build steps, fix rounds, preview and archive once the generation has ended.
  useEffect(() => {
    if (!settled) return;
    onSettledRef.current();
    const failed = (error: Error) => setStreamError(error.message);
    request(GenerationStepsDocument, { id })
      .then(({ generation }) => setSteps(generation?.buildSteps ?? []))
      .catch(failed);
    request(GenerationPreviewDocument, { id })
      .then(({ generation }) => setPreview(generation?.preview?.url ?? null))
      .catch(failed);
    request(GenerationArchiveDocument, { id, format: 'ZIP' })
      .then(({ generation }) => setArchive(generation?.archive ?? null))
      .catch(failed);
  }, [settled, id]);

  // Fix rounds appear when FIXING starts (again at each round) and stay once it is over.
  useEffect(() => {
    if (!fixing && !settled) return;
    request(GenerationFixesDocument, { id })
      .then(({ generation }) => setFixRounds(generation?.fixRounds ?? []))
      .catch((error: Error) => setStreamError(error.message));
  }, [fixing, settled, id]);

  const round = fixRounds.at(-1)?.round;
  return (
    <div className="stack">
      <p role="status" className={`status status-${generation?.status.toLowerCase() ?? 'loading'}`}>
        {generation ? (
          <>
            <strong>{generation.status}</strong>
            <span> · phase {generation.phase}</span>
            {fixing && round !== undefined && <span> · fix round {round}</span>}
            {generation.error && <span> · {generation.error.code}: {generation.error.message}</span>}
          </>
        ) : (
          'Connecting…'
        )}
      </p>
      {streamError && (
        <p role="alert" className="error">
          {streamError}
        </p>
      )}
      <p className="muted prompt-echo">“{generation?.prompt}”</p>

      <h2 id={`output-${id}`}>Model output</h2>
      <AutoScroll role="log" aria-label="Model output" className="log">
        {output || !settled ? <pre>{output}</pre> : <p className="muted">No model output.</p>}
      </AutoScroll>

      <h2>Build log</h2>
      <AutoScroll role="log" aria-label="Build log" className="log">
        <BuildLog lines={lines} steps={steps} />
      </AutoScroll>

      {fixRounds.length > 0 && (
        <section aria-label="Fix rounds">
          <h2>Fix rounds</h2>
          <ol className="list">
            {fixRounds.map((fix) => (
              <li key={fix.round}>
                Round {fix.round}: {fix.status}
              </li>
            ))}
          </ol>
        </section>
      )}

      {settled && (
        <section className="stack" aria-label="Result">
          <div className="row">
            <h2 className="grow">Preview</h2>
            {archive && (
              <a className="button" href={archive.url} download={archive.filename}>
                Download ZIP
              </a>
            )}
          </div>
          {preview ? (
            <iframe
              title="Preview"
              src={preview}
              className="preview"
              sandbox="allow-scripts allow-forms allow-popups allow-modals"
            />
          ) : (
            <p className="muted">No preview: this generation has no web build.</p>
          )}
        </section>
      )}
    </div>
  );
}

/** The log grouped by build step, in the order the steps ran. */
function BuildLog({ lines, steps }: { lines: LogLine[]; steps: Steps }) {
  const groups = new Map<string, LogLine[]>();
  for (const line of lines) {
    const key = `${line.round}:${line.step}`;
    groups.set(key, [...(groups.get(key) ?? []), line]);
  }
  if (groups.size === 0) return <p className="muted">No build output yet.</p>;
  return (
    <>
      {[...groups].map(([key, stepLines]) => {
        const { step, round } = stepLines[0]!;
        const info = steps.find((candidate) => candidate.name === step && candidate.round === round);
        return (
          <section key={key} className="step">
            <h3>
              {step}
              {round > 0 && ` · fix round ${round}`}
              {info && (
                <span className={`tag step-${info.status.toLowerCase()}`}>
                  {info.status}
                  {info.durationMs !== null && info.durationMs !== undefined && ` · ${(info.durationMs / 1000).toFixed(1)} s`}
                </span>
              )}
            </h3>
            <pre>
              {stepLines.map((line) => (
                <span key={line.seq} className={line.stream === 'STDERR' ? 'stderr' : undefined}>
                  {line.text}
                  {'\n'}
                </span>
              ))}
            </pre>
          </section>
        );
      })}
    </>
  );
}

type AutoScrollProps = { role: string; 'aria-label': string; className: string; children: ReactNode };

/** A scrollable region that follows new content while the reader is at its bottom; focusable for keyboard scrolling. */
function AutoScroll({ children, ...props }: AutoScrollProps) {
  const ref = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  useEffect(() => {
    if (atBottom.current && ref.current) ref.current.scrollTop = ref.current.scrollHeight;
  });
  return (
    <div
      {...props}
      ref={ref}
      tabIndex={0}
      onScroll={(event) => {
        const element = event.currentTarget;
        atBottom.current = element.scrollHeight - element.scrollTop - element.clientHeight < 24;
      }}
    >
      {children}
    </div>
  );
}
