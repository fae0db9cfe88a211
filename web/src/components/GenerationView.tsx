import { type MouseEvent, type ReactNode, memo, useEffect, useRef, useState } from 'react';
import { request } from '../api/graphql';
import { follow } from '../api/live';
import {
  type BuildLogsWithRoundSubscription,
  BuildLogsWithRoundDocument,
  CancelGenerationDocument,
  GenerationArchiveDocument,
  type GenerationArchiveQuery,
  GenerationChunksWithRoundDocument,
  type GenerationFieldsFragment,
  GenerationFixesDocument,
  type GenerationFixesQuery,
  GenerationPreviewDocument,
  type GenerationPreviewQuery,
  GenerationStepsDocument,
  type GenerationStepsQuery,
  GenerationUpdatedDocument,
  GenerationWithLogDocument,
  RetryGenerationDocument,
} from '../gql/graphql';
import { LoadFailed } from './LoadFailed';

type LogLine = BuildLogsWithRoundSubscription['buildLogs'];
type Steps = NonNullable<GenerationStepsQuery['generation']>['buildSteps'];
type FixRounds = NonNullable<GenerationFixesQuery['generation']>['fixRounds'];
type Archive = NonNullable<NonNullable<GenerationArchiveQuery['generation']>['archive']>;
type Preview = NonNullable<NonNullable<GenerationPreviewQuery['generation']>['preview']>;

/** The statuses a generation ends in. */
export const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
/** A generation that can still be cancelled, and one that ended without a result and can be tried again. */
const CANCELLABLE = new Set(['QUEUED', 'RUNNING']);
const RETRYABLE = new Set(['FAILED', 'CANCELLED']);

// Long outputs and build logs (tens of thousands of lines) render in blocks: what arrives
// within one frame is added at once, into the last block only. A full block never changes
// again, so React skips it and the page keeps its DOM nodes (and a reader's selection).
const BLOCK = 200;
type Blocks<T> = readonly (readonly T[])[];

function append<T>(blocks: Blocks<T>, items: readonly T[]): Blocks<T> {
  const next = [...blocks];
  const last = next.pop() ?? [];
  let open: T[] = last.length < BLOCK ? [...last] : (next.push(last), []);
  for (const item of items) {
    if (open.length === BLOCK) {
      next.push(open);
      open = [];
    }
    open.push(item);
  }
  next.push(open);
  return next;
}

/** The lines of one build step (and round), in the order they came. */
interface Group {
  key: string;
  step: string;
  round: number;
  lines: Blocks<LogLine>;
}

function withLines(groups: readonly Group[], lines: readonly LogLine[]): readonly Group[] {
  const next = [...groups];
  for (let start = 0, end = 0; start < lines.length; start = end) {
    const { step, round } = lines[start]!;
    while (end < lines.length && lines[end]!.step === step && lines[end]!.round === round) end++;
    const key = `${round}:${step}`;
    const index = next.findIndex((group) => group.key === key);
    const run = lines.slice(start, end);
    if (index < 0) next.push({ key, step, round, lines: append([], run) });
    else next[index] = { ...next[index]!, lines: append(next[index]!.lines, run) };
  }
  return next;
}

/** Collects what arrives between two frames and hands it over once a frame, not once a message. */
function useFrameBatch<T>(flush: (items: T[]) => void) {
  const flushRef = useRef(flush);
  flushRef.current = flush;
  const [batch] = useState(() => {
    let pending: T[] = [];
    let frame = 0;
    return {
      push(item: T) {
        pending.push(item);
        frame ||= requestAnimationFrame(() => {
          frame = 0;
          const items = pending;
          pending = [];
          flushRef.current(items);
        });
      },
      /** Forgets what has not been shown yet. */
      drop() {
        cancelAnimationFrame(frame);
        frame = 0;
        pending = [];
      },
    };
  });
  useEffect(() => () => batch.drop(), [batch]);
  return batch;
}

/**
 * One generation, live: status and phase, model output, build log by step, preview and archive;
 * for its owner and editors (`canEdit`), Cancel while it runs and Retry once it failed or was
 * cancelled (`onRetried` then shows the retry, which gets `focusAction`).
 */
export function GenerationView({
  id,
  canEdit,
  focusAction = false,
  onSettled,
  onRetried,
}: {
  id: string;
  canEdit: boolean;
  /** Focus Cancel or Retry once it shows: this view replaced the one whose Retry had the focus. */
  focusAction?: boolean;
  onSettled: () => void;
  onRetried: (id: string) => void;
}) {
  const [generation, setGeneration] = useState<GenerationFieldsFragment | null>(null);
  const [output, setOutput] = useState<Blocks<string>>([]);
  const [groups, setGroups] = useState<readonly Group[]>([]);
  const [steps, setSteps] = useState<Steps>([]);
  const [fixRounds, setFixRounds] = useState<FixRounds>([]);
  /** The preview once asked for: null when the generation has none, undefined until known. */
  const [preview, setPreview] = useState<Preview | null | undefined>(undefined);
  const [archive, setArchive] = useState<Archive | null>(null);
  /** Why the build steps, preview or archive of the ended generation could not be loaded (Retry loads them again). */
  const [resultError, setResultError] = useState<string | null>(null);
  const resultHeading = useRef<HTMLHeadingElement>(null);
  const [streamError, setStreamError] = useState<string | null>(null);
  /** The live streams wait to reconnect (with the reason when known). */
  const [reconnecting, setReconnecting] = useState<{ reason?: string } | null>(null);
  /** What Cancel or Retry answered when it did not work. */
  const [actionError, setActionError] = useState<string | null>(null);
  /** The status in which Cancel or Retry was pressed: the button is busy until the status changes (or the request failed). */
  const [pressedIn, setPressedIn] = useState<string | null>(null);
  const outputBatch = useFrameBatch<string>((pieces) => setOutput((blocks) => append(blocks, pieces)));
  const logBatch = useFrameBatch<LogLine>((lines) => setGroups((list) => withLines(list, lines)));
  /**
   * A preview URL fetched to replace an expired one, until its first load: that load is its own,
   * not a reload inside the preview, so it never asks again, whatever the page's clock says (a
   * clock ahead of the server's by more than the URL's lifetime would otherwise ask forever).
   */
  const renewedPreview = useRef<string | null>(null);
  const settled = generation !== null && TERMINAL.has(generation.status);
  const fixing = generation?.phase === 'FIXING';
  const outputRound = useRef(0);
  /** The seq of the next build-log line to show: lines come over HTTP and the stream, each shown once, in order. */
  const nextLine = useRef(0);
  const onSettledRef = useRef(onSettled);
  onSettledRef.current = onSettled;

  useEffect(() => {
    let loaded = false;
    /** Updates the socket delivered: an HTTP answer older than one of them is stale. */
    let updates = 0;
    const onResumed = () => setReconnecting(null);
    /**
     * Shows the lines the page has not shown yet. A run that starts later leaves a gap: none of
     * it, unless the page has no line yet (the HTTP tail of a long log): then a line says how
     * many came before it, and the stream goes on after the tail.
     */
    const showLines = (lines: readonly LogLine[]) => {
      const first = lines[0];
      if (!first || first.seq > nextLine.current) {
        if (!first || nextLine.current > 0) return;
        logBatch.push({ ...first, seq: -1, stream: 'STDOUT', text: `[kiln] ${first.seq} earlier lines are not shown here` });
      }
      for (const line of lines) {
        if (line.seq < nextLine.current) continue;
        logBatch.push(line);
        nextLine.current = line.seq + 1;
      }
    };
    const onRetrying = (reason: string | undefined) => {
      setReconnecting({ reason });
      if (loaded) return;
      loaded = true;
      const seen = updates;
      // Once over HTTP, so that a version shows its state, and a finished one its output, without a socket.
      request(GenerationWithLogDocument, { id })
        .then(({ generation }) => {
          // Lines never change: unlike the state, they are good to show whenever they come.
          showLines(generation?.buildLog ?? []);
          if (!generation || updates !== seen) return;
          setGeneration(generation);
          if (!TERMINAL.has(generation.status)) return;
          // The output is whole: these streams would only replay it once the socket is back.
          stopUpdates();
          stopChunks();
          outputBatch.drop();
          setOutput(generation.output ? [[generation.output]] : []);
        })
        // Most likely down for the reason the socket is (a database outage, no network): tried
        // again at the next retry; the streams say what is wrong meanwhile.
        .catch(() => (loaded = false));
    };
    const stopUpdates = follow({
      document: GenerationUpdatedDocument,
      variables: () => ({ id }),
      onData: (data) => {
        updates++;
        setGeneration(data.generationUpdated);
      },
      onError: setStreamError,
      onRetrying,
      onResumed,
    });
    const stopChunks = follow({
      document: GenerationChunksWithRoundDocument,
      variables: (afterSeq) => ({ id, afterSeq }),
      seqOf: (data) => data.generationChunks.seq,
      onData: ({ generationChunks: chunk }) => {
        // A fix round's answer starts under a line of its own.
        const heading = chunk.round > outputRound.current ? `\n\n── fix round ${chunk.round} ──\n\n` : '';
        outputRound.current = chunk.round;
        outputBatch.push(heading + chunk.text);
      },
      onError: setStreamError,
      onRetrying,
      onResumed,
    });
    const stopLogs = follow({
      document: BuildLogsWithRoundDocument,
      // After the last line the page shows, which may have come over HTTP.
      variables: () => ({ id, afterSeq: nextLine.current > 0 ? nextLine.current - 1 : undefined }),
      seqOf: (data) => data.buildLogs.seq,
      onData: (data) => showLines([data.buildLogs]),
      onError: setStreamError,
      onRetrying,
      onResumed,
    });
    return () => {
      stopUpdates();
      stopChunks();
      stopLogs();
    };
  }, [id, outputBatch, logBatch]);

  /** A fresh preview URL: signed URLs expire (SIGNED_URL_TTL_SECONDS). */
  const loadPreview = () =>
    request(GenerationPreviewDocument, { id }).then(({ generation }) => {
      setPreview(generation?.preview ?? null);
      return generation?.preview;
    });

  /**
   * The build steps, preview and archive of the ended generation; true once all three loaded.
   * A failure is said with a Retry, never as "no preview": the generation may well have one.
   */
  const loadResult = async () => {
    const results = await Promise.allSettled([
      request(GenerationStepsDocument, { id }).then(({ generation }) => setSteps(generation?.buildSteps ?? [])),
      loadPreview(),
      request(GenerationArchiveDocument, { id, format: 'ZIP' }).then(({ generation }) => setArchive(generation?.archive ?? null)),
    ]);
    const failure = results.find((result) => result.status === 'rejected');
    setResultError(failure ? (failure.reason as Error).message : null);
    return !failure;
  };

  /** Downloads the ZIP from a URL asked for now: the one fetched with the page may have expired. */
  const download = async (event: MouseEvent<HTMLAnchorElement>) => {
    event.preventDefault();
    try {
      const { generation } = await request(GenerationArchiveDocument, { id, format: 'ZIP' });
      const fresh = generation?.archive;
      if (!fresh) return setStreamError('This version has no source to download.');
      setArchive(fresh);
      const link = document.createElement('a');
      link.href = fresh.url;
      link.download = fresh.filename;
      link.click();
    } catch (error) {
      setStreamError((error as Error).message);
    }
  };

  // Build steps, fix rounds, preview and archive once the generation has ended.
  useEffect(() => {
    if (!settled) return;
    onSettledRef.current();
    void loadResult();
  }, [settled, id]);

  // Fix rounds appear when FIXING starts (again at each round) and stay once it is over.
  useEffect(() => {
    if (!fixing && !settled) return;
    request(GenerationFixesDocument, { id })
      .then(({ generation }) => setFixRounds(generation?.fixRounds ?? []))
      .catch((error: Error) => setStreamError(error.message));
  }, [fixing, settled, id]);

  const cancellable = generation !== null && CANCELLABLE.has(generation.status);
  const retryable = generation !== null && RETRYABLE.has(generation.status);
  const acting = generation !== null && pressedIn === generation.status;
  const hasAction = canEdit && (cancellable || retryable);
  const actionButton = useRef<HTMLButtonElement>(null);
  /** Once only: later, the focus is wherever the user put it. */
  const actionFocusPending = useRef(focusAction);
  useEffect(() => {
    if (!hasAction || !actionFocusPending.current) return;
    actionFocusPending.current = false;
    actionButton.current?.focus();
  }, [hasAction]);

  /** Cancels the generation while it runs (its new status comes over the stream), or retries it once it failed or was cancelled. */
  const cancelOrRetry = async () => {
    if (!generation || acting) return;
    setPressedIn(generation.status);
    setActionError(null);
    const failed = (message: string) => {
      setActionError(message);
      setPressedIn(null);
    };
    try {
      if (cancellable) {
        const { cancelGeneration } = await request(CancelGenerationDocument, { id });
        if (cancelGeneration.__typename !== 'Generation') failed(cancelGeneration.message);
      } else {
        const { retryGeneration } = await request(RetryGenerationDocument, { id });
        if (retryGeneration.__typename === 'Generation') onRetried(retryGeneration.id);
        else failed(retryGeneration.message);
      }
    } catch (failure) {
      failed((failure as Error).message);
    }
  };

  const round = fixRounds.at(-1)?.round;
  return (
    <div className="stack">
      <div className="row">
        <p role="status" className={`status grow status-${generation?.status.toLowerCase() ?? 'loading'}`}>
          {generation ? (
            <>
              <strong>{generation.status}</strong>
              <span> · phase {generation.phase}</span>
              {fixing && round !== undefined && <span> · fix round {round}</span>}
              {generation.error && <span> · {generation.error.code}: {generation.error.message}</span>}
            </>
          ) : (
            !reconnecting && 'Connecting…'
          )}
          {reconnecting && (
            <span className="notice">
              {generation && ' · '}
              Reconnecting…{reconnecting.reason && ` (${reconnecting.reason})`}
            </span>
          )}
        </p>
        {hasAction && (
          // One button whose label follows the status: the focus stays on it from Cancel to Retry. The
          // second click of a double click is no second press: a queued run's Cancel turns into Retry
          // at once, under the pointer.
          <button ref={actionButton} type="button" className="secondary" aria-disabled={acting} onClick={(event) => event.detail <= 1 && void cancelOrRetry()}>
            {cancellable ? 'Cancel' : 'Retry'}
          </button>
        )}
      </div>
      {actionError && (
        <p role="alert" className="error">
          {actionError}
        </p>
      )}
      {streamError && (
        <p role="alert" className="error">
          {streamError}
        </p>
      )}
      {/* As written, line breaks and indentation kept; only its trailing blanks would push the closing quote down. */}
      <p className="muted prompt-echo">“{generation?.prompt.trimEnd()}”</p>

      <h2 id={`output-${id}`}>Model output</h2>
      <AutoScroll role="log" aria-label="Model output" className="log">
        {output.length > 0 || !settled ? (
          <pre>
            {output.map((pieces, index) => (
              <TextBlock key={index} pieces={pieces} />
            ))}
          </pre>
        ) : (
          <p className="muted">No model output.</p>
        )}
      </AutoScroll>

      <h2>Build log</h2>
      <AutoScroll role="log" aria-label="Build log" className="log">
        <BuildLog groups={groups} steps={steps} waiting={reconnecting !== null} />
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
            <h2 ref={resultHeading} tabIndex={-1} className="grow">
              Preview
            </h2>
            {archive && (
              <a className="button" href={archive.url} download={archive.filename} onClick={(event) => void download(event)}>
                Download ZIP
              </a>
            )}
          </div>
          {resultError !== null && (
            <LoadFailed
              message={`The preview and download could not be loaded. ${resultError}`}
              label="Retry loading the preview"
              retry={loadResult}
              focusAfter={resultHeading}
            />
          )}
          {preview ? (
            <iframe
              title="Preview"
              src={preview.url}
              className="preview"
              sandbox="allow-scripts allow-forms allow-popups allow-modals"
              onLoad={() => {
                // Loaded again (a reload inside the preview) after its URL expired: it shows
                // "This link has expired", so load it anew from a fresh URL.
                if (renewedPreview.current === preview.url) {
                  renewedPreview.current = null;
                  return;
                }
                if (Date.parse(preview.expiresAt) > Date.now()) return;
                void loadPreview().then(
                  (fresh) => (renewedPreview.current = fresh?.url ?? null),
                  (error: Error) => setResultError(error.message),
                );
              }}
            />
          ) : preview === null ? (
            <p className="muted">No preview: this generation has no web build.</p>
          ) : (
            resultError === null && <p className="muted">Loading the preview…</p>
          )}
        </section>
      )}
    </div>
  );
}

/** Text that arrived in pieces: the pieces stay separate text nodes, so none is rewritten as more come. */
const TextBlock = memo(function TextBlock({ pieces }: { pieces: readonly string[] }) {
  return <>{pieces}</>;
});

/** The log grouped by build step, in the order the steps ran. */
function BuildLog({ groups, steps, waiting }: { groups: readonly Group[]; steps: Steps; waiting: boolean }) {
  if (groups.length === 0) return <p className="muted">{waiting ? 'The build log shows once the connection is back.' : 'No build output yet.'}</p>;
  return (
    <>
      {groups.map((group) => (
        <StepLog
          key={group.key}
          group={group}
          info={steps.find((candidate) => candidate.name === group.step && candidate.round === group.round)}
        />
      ))}
    </>
  );
}

const StepLog = memo(function StepLog({ group, info }: { group: Group; info: Steps[number] | undefined }) {
  return (
    <section className="step">
      <h3>
        {group.step}
        {group.round > 0 && ` · fix round ${group.round}`}
        {info && (
          <span className={`tag step-${info.status.toLowerCase()}`}>
            {info.status}
            {info.durationMs !== null && info.durationMs !== undefined && ` · ${(info.durationMs / 1000).toFixed(1)} s`}
          </span>
        )}
      </h3>
      <pre>
        {group.lines.map((lines, index) => (
          <LogBlock key={index} lines={lines} />
        ))}
      </pre>
    </section>
  );
});

const LogBlock = memo(function LogBlock({ lines }: { lines: readonly LogLine[] }) {
  return (
    <span className="log-block">
      {lines.map((line) => (
        <span key={line.seq} className={line.stream === 'STDERR' ? 'stderr' : undefined}>
          {line.text}
          {'\n'}
        </span>
      ))}
    </span>
  );
});

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
