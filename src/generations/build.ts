import { realpath } from 'node:fs/promises';
import { type Span, SpanStatusCode } from '@opentelemetry/api';
import type { Tx } from '../db/client.js';
import { pipelineScope } from '../db/scope.js';
import { inSpan } from '../observability/tracing.js';
import { DependencyPolicyError, fetchEnv, prepareFetch } from '../toolchain/dependency-policy.js';
import { type Diagnostic, parseDiagnostics, placeOf, workspaceScrubber } from '../toolchain/diagnostics.js';
import { buildEnv, runStep, type StepResult } from '../toolchain/step-runner.js';
import { type BuildStepSpec, commandLine } from '../toolchain/targets.js';
import { projectCacheDir } from '../workspace/workspace.js';
import { Batcher } from './batcher.js';
import { fixStore } from './fix-store.js';
import { MAX_PARSED_CHARS, MAX_PARSED_LINES } from './output-parser.js';
import type { PhaseChange, PipelineDeps } from './pipeline.js';
import type { RunCursor } from './run-cursor.js';
import { RunFailure } from './run-failure.js';
import { type BuildStepRow, generationStore } from './store.js';

// One build of a generation's workspace: the target's steps in order, each line of
// their output persisted and published with its round. A step that fails with output
// its tool's parser understands ends the build with diagnostics (stored per round),
// which a fix round can act on; any other failure ends the run.

/**
 * Characters of build log one generation keeps, every step and round together: a step is
 * held to 10,000 lines of 4,000, but fix rounds run steps again and again. Past it, one
 * line says so and the rest is dropped (the steps still run; their tails still explain a failure).
 */
export const MAX_BUILD_LOG_CHARS = 8_000_000;

export type BuildOutcome = { ok: true } | { ok: false; step: string; failure: RunFailure; diagnostics: Diagnostic[] };

export interface BuildInput {
  generationId: string;
  steps: BuildStepSpec[];
  /** 0 after the first answer, N after fix round N. */
  round: number;
  cursor: RunCursor;
  /** Committed with the build's first write: the phase BUILDING and the files the build runs on. */
  entry?: PhaseChange;
}

// Writes are few and batched: the steps go in with the first one RUNNING; a step's last
// log lines, its end and the next step's start commit together.
export async function build(deps: PipelineDeps, input: BuildInput, cwd: string, signal: AbortSignal): Promise<BuildOutcome> {
  const db = pipelineScope(deps.db, deps.logger);
  const { generationId, steps, round, cursor } = input;
  const { bins, stepTimeoutMs, maxLogChars = MAX_BUILD_LOG_CHARS } = deps.toolchain;
  // Tools print the real path (a symlinked DATA_DIR resolved): paths in either form are the workspace's.
  // A missing workspace is the step runner's to report.
  const workspaceDirs = [...new Set([cwd, await realpath(cwd).catch(() => cwd)])];
  const withoutWorkspace = workspaceScrubber(workspaceDirs);
  const first = cursor.nextStepOrdinal;
  cursor.nextStepOrdinal += steps.length;
  await db.run(async (tx) => {
    await input.entry?.write(tx);
    const startedAt = new Date();
    await generationStore.insertSteps(
      tx,
      steps.map((step, i) => ({
        generationId,
        ordinal: first + i,
        round,
        name: step.name,
        command: commandLine(step, bins),
        ...(i === 0 ? { status: 'RUNNING' as const, startedAt } : {}),
      })),
    );
  });
  input.entry?.announce();
  for (const [i, step] of steps.entries()) {
    const ordinal = first + i;
    const output: string[] = [];
    let parsedChars = 0;
    const toRows = (batch: { stream: 'STDOUT' | 'STDERR'; text: string }[]) => {
      const kept: typeof batch = [];
      for (const line of batch) {
        // The parser gets the step's first lines without a gap, or nothing more.
        parsedChars += line.text.length;
        if (output.length < MAX_PARSED_LINES && parsedChars <= MAX_PARSED_CHARS) output.push(line.text);
        if (cursor.logChars >= maxLogChars) continue;
        const text = withoutWorkspace(line.text);
        kept.push({ stream: line.stream, text });
        cursor.logChars += text.length;
        if (cursor.logChars >= maxLogChars) kept.push({ stream: 'STDERR', text: `[kiln] This generation's build log passed ${maxLogChars.toLocaleString('en')} characters; later lines are not kept.` });
      }
      return kept.map((line) => ({ generationId, seq: cursor.nextLogSeq++, step: step.name, round, ...line }));
    };
    const publish = (rows: ReturnType<typeof toRows>) => {
      if (rows.length > 0) deps.bus.publish('buildLogs', generationId, rows.map(({ seq, step, stream, text }) => ({ seq, step, stream, text, round })));
    };
    const lines = new Batcher<{ stream: 'STDOUT' | 'STDERR'; text: string }>(async (batch) => {
      const rows = toRows(batch);
      await db.run((tx) => generationStore.appendLogLines(tx, rows));
      publish(rows);
    });
    /** The step's last lines (taken from the batcher before) and its end, with whatever else must commit with them. */
    const finish = async (rows: ReturnType<typeof toRows>, values: Partial<BuildStepRow>, also?: (tx: Tx) => Promise<void>) => {
      const finishedAt = new Date();
      await db.run(async (tx) => {
        await generationStore.appendLogLines(tx, rows);
        await generationStore.updateStep(tx, generationId, ordinal, { ...values, finishedAt });
        await also?.(tx);
      });
      publish(rows);
    };
    // The fetch has the network: it gets what the server's registry serves, never an address the project chose.
    const refused = step.fetch ? await guardFetch(step, cwd, (text) => lines.add({ stream: 'STDERR', text })) : undefined;
    if (refused) {
      await finish(toRows(await lines.drain()), { status: 'FAILED' });
      throw refused;
    }
    let result: StepResult;
    const stepStarted = performance.now();
    try {
      const attributes = { 'kiln.generation.id': generationId, 'kiln.build.step': step.name, 'kiln.build.ordinal': ordinal, 'kiln.round': round };
      result = await inSpan(`build step ${step.name}`, attributes, (span) => runStep({
        command: bins[step.tool],
        args: step.args,
        cwd,
        env: buildEnv(step.fetch ? fetchEnv(step.tool) : {}),
        timeoutMs: stepTimeoutMs,
        signal,
        // A cancelled build should stop within about a second, even if the tool ignores SIGTERM.
        killGraceMs: 500,
        onLine: (line) => lines.add(line),
        sandbox: deps.toolchain.sandbox?.forStep({ tool: step.tool, fetch: step.fetch === true, cacheDir: projectCacheDir(cwd) }),
      }).then((stepResult) => describeStep(span, stepResult)));
    } catch (error) {
      await lines.flushAfterFailure(deps.logger.child({ source: 'GenerationPipeline', generationId, round, step: step.name })); // what the step printed before it went wrong is kept
      throw error;
    }
    const rest = toRows(await lines.drain());
    const status = result.status === 'SUCCEEDED' ? 'SUCCEEDED' : result.status === 'CANCELLED' ? 'CANCELLED' : 'FAILED';
    deps.metrics?.observeBuildStep({ step: step.name, status }, (performance.now() - stepStarted) / 1000);
    const ended = { status, exitCode: result.exitCode } as const;
    if (result.status === 'SUCCEEDED') {
      const next = i + 1 < steps.length ? ordinal + 1 : undefined;
      await finish(rest, ended, next === undefined ? undefined : (tx) => generationStore.updateStep(tx, generationId, next, { status: 'RUNNING', startedAt: new Date() }));
      continue;
    }
    if (result.status === 'CANCELLED') {
      await finish(rest, ended);
      throw signal.reason ?? 'cancelled';
    }
    // Only the tool's own verdict is worth a paid fix round: a step killed (by a signal or a
    // limit) printed part of it at most, and a server fault is none of the project's.
    const toolFailed = result.status === 'FAILED' && result.exitCode !== null && !result.serverFault;
    const diagnostics = toolFailed && step.diagnostics ? parseDiagnostics(step.diagnostics, output, workspaceDirs) : [];
    const failure = stepFailure(step.name, result, stepTimeoutMs, diagnostics, withoutWorkspace);
    if (diagnostics.length === 0) {
      await finish(rest, ended); // output no parser understands: nothing to hand back
      throw failure;
    }
    await finish(rest, ended, async (tx) => {
      await fixStore.insertDiagnostics(tx, generationId, round, diagnostics);
      // The rest of this round's steps will not run; a fix round brings steps of its own.
      await generationStore.closeOpenSteps(tx, generationId, false);
    });
    return { ok: false, step: step.name, failure, diagnostics };
  }
  return { ok: true };
}

/** The step's outcome on its span: its status and exit code; an error unless it succeeded. */
function describeStep(span: Span, result: StepResult): StepResult {
  span.setAttributes({ 'kiln.build.status': result.status, ...(result.exitCode === null ? {} : { 'process.exit.code': result.exitCode }) });
  if (result.status !== 'SUCCEEDED') span.setStatus({ code: SpanStatusCode.ERROR, message: result.status });
  return result;
}

/** Readies the workspace for a dependency fetch; returns the run's failure when the fetch may not run. */
async function guardFetch(step: BuildStepSpec, cwd: string, log: (text: string) => void | Promise<void>): Promise<RunFailure | undefined> {
  try {
    const removed = await prepareFetch(step.tool, cwd);
    if (removed.length > 0) await log(`[dependency policy] removed ${removed.join(', ')}: the dependency fetch starts from the checked manifest alone, with none of the project's lock files, tool configuration or installed packages`);
    return undefined;
  } catch (error) {
    if (!(error instanceof DependencyPolicyError)) throw error;
    await log(`[dependency policy] ${error.message}`);
    return new RunFailure(error.code, `Build step "${step.name}" did not run: ${error.message}`);
  }
}

function stepFailure(name: string, result: StepResult, timeoutMs: number, diagnostics: Diagnostic[], withoutWorkspace: (text: string) => string): RunFailure {
  switch (result.status) {
    case 'TOOLCHAIN_MISSING':
      return new RunFailure('TOOLCHAIN_MISSING', result.message ?? `The build tool for "${name}" was not found.`);
    case 'TIMED_OUT':
      return new RunFailure('TIMEOUT', `Build step "${name}" took longer than ${Math.round(timeoutMs / 1000)} s and was stopped.`);
    default: {
      if (result.serverFault) return new RunFailure('INTERNAL', `Build step "${name}" could not finish on this server, for a reason of the server's and not the project's; try again later.`, result.message);
      // The tool's first problem says what went wrong; failing that, its last lines other than a stack trace's.
      const detail = diagnostics.length > 0 ? firstProblem(diagnostics) : result.tail.filter((line) => line.trim() && !/^\s+at /.test(line)).slice(-3).map(withoutWorkspace).join('\n');
      const why = result.exitCode === null ? (result.message ?? 'no exit code') : `exit code ${result.exitCode}`;
      return new RunFailure('BUILD_FAILED', `Build step "${name}" failed (${why}).${detail ? `\n${detail}` : ''}`);
    }
  }
}

function firstProblem([first, ...others]: Diagnostic[]): string {
  const place = placeOf(first!);
  return `${place ? `${place}: ` : ''}${first!.message}${others.length > 0 ? `\n(and ${others.length} more)` : ''}`;
}
