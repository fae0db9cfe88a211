import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { LineSplitter, OutputCollector, type OutputLine, type OutputStream } from './output-lines.js';
import { ProcessGroup } from './process-group.js';
import type { Jail, StepSandbox } from './sandbox.js';
import { type SpawnFailure, spawnProcess } from './spawner.js';

export type { OutputLine, OutputStream } from './output-lines.js';

export type StepStatus = 'SUCCEEDED' | 'FAILED' | 'CANCELLED' | 'TIMED_OUT' | 'TOOLCHAIN_MISSING';

export interface RunStepOptions {
  /** An absolute path, or a name looked up on `env.PATH`. */
  command: string;
  args: string[];
  cwd: string;
  /** The child's whole environment (see `buildEnv`); nothing else is inherited. */
  env: Record<string, string>;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Called once per line, in order; the next line waits for a returned promise. */
  onLine: (line: OutputLine) => void | Promise<void>;
  /** Longer lines are cut and end with '…'. Default 4000. */
  maxLineLength?: number;
  /** Lines after this many are dropped and one omission marker is delivered at the end. Default 10000. */
  maxLines?: number;
  /** How many of the last lines the result keeps. Default 200. */
  tailLines?: number;
  /** Time between SIGTERM and SIGKILL when the process tree is stopped. Default 2000. */
  killGraceMs?: number;
  /** Runs the step inside this sandbox (see sandbox.ts); unset runs it as a plain child process. */
  sandbox?: StepSandbox;
}

export interface StepResult {
  status: StepStatus;
  exitCode: number | null;
  /** The last lines of both streams, as read, whether or not they were delivered. */
  tail: string[];
  message?: string;
  /** The step could not run for a reason of this server's (its sandbox, its spawner), not the project's: `message` is for the operator, and may name host paths. */
  serverFault?: true;
}

/** Runs one build tool without a shell, streaming its output line by line, and never leaves its process tree behind. */
export async function runStep(options: RunStepOptions): Promise<StepResult> {
  const { cwd, timeoutMs, signal } = options;
  if (signal?.aborted) return { status: 'CANCELLED', exitCode: null, tail: [], message: 'cancelled' };
  let jail: Jail | undefined;
  if (options.sandbox) {
    const entered = await enterSandbox(options);
    if ('status' in entered) return entered;
    jail = entered;
  }
  const { command, args, env } = jail ?? options;

  // fd 3: bwrap's report of the sandbox's init, whose end is the end of everything in it.
  const child = await spawnProcess({ command, args, cwd, env, detached: true, info: jail !== undefined });
  if (!('pid' in child)) {
    await jail?.release();
    return spawnFailure(options, child);
  }

  const group = new ProcessGroup(child.pid, options.killGraceMs ?? 2_000);
  const collector = new OutputCollector(options.onLine, {
    maxLines: options.maxLines ?? 10_000,
    tailLines: options.tailLines ?? 200,
  });
  let exited = false;
  let stoppedBy: 'TIMED_OUT' | 'CANCELLED' | 'LIMIT' | undefined;
  const stop = (reason: 'TIMED_OUT' | 'CANCELLED' | 'LIMIT') => {
    if (exited || stoppedBy) return;
    stoppedBy = reason;
    void group.terminate();
  };
  // Whatever the tool left running in its group would otherwise hold our pipes open.
  void child.exit.then(() => {
    exited = true;
    void group.terminate();
  });
  const timer = setTimeout(() => stop('TIMED_OUT'), timeoutMs);
  const onAbort = () => stop('CANCELLED');
  // Entering the sandbox and spawning took a while: a cancel or shutdown meanwhile stops the step now.
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  jail?.started(child.pid, child.info!, () => stop('LIMIT'));
  let limitPassed: string | undefined;

  try {
    const maxLineLength = options.maxLineLength ?? 4_000;
    const reading = Promise.all([
      readLines(child.stdout, 'STDOUT', collector, maxLineLength),
      readLines(child.stderr, 'STDERR', collector, maxLineLength),
    ]);
    const [exit] = await Promise.all([child.exit, reading]);
    const result = jail ? asReportedByWrapper(exit) : exit;
    await collector.finish();
    const tail = collector.tail;
    // The sandbox is gone only once its namespace is: then a last look at the limits.
    await group.terminate();
    limitPassed = await jail?.release();
    const toolStarted = (await jail?.toolStarted()) ?? true;
    jail = undefined;
    if (limitPassed) {
      // Said last in the build log, so the step's failure message ends with it.
      const text = `[sandbox] ${limitPassed}`;
      tail.push(text);
      await options.onLine({ stream: 'STDERR', text });
      return { status: 'FAILED', exitCode: null, tail, message: limitPassed };
    }
    if (stoppedBy === 'TIMED_OUT') {
      return { status: 'TIMED_OUT', exitCode: null, tail, message: `timed out after ${timeoutMs / 1000} s` };
    }
    if (stoppedBy === 'CANCELLED') return { status: 'CANCELLED', exitCode: null, tail, message: 'cancelled' };
    const { exitCode } = result;
    const ended = exitCode === null ? `killed by ${result.signal ?? 'a signal'}` : `exited with code ${exitCode}`;
    if (result.lost) return { status: 'FAILED', exitCode, tail, message: 'the process spawner stopped', serverFault: true };
    // Its exit code is the wrapper's or bwrap's (125, 1), which a tool could give too: not the tool's verdict.
    if (!toolStarted) {
      const message = `the build sandbox failed before ${basename(options.command)} started (it ${ended})${lastLine(tail)}`;
      return { status: 'FAILED', exitCode: null, tail, message, serverFault: true };
    }
    if (exitCode === 0) return { status: 'SUCCEEDED', exitCode, tail };
    return { status: 'FAILED', exitCode, tail, message: ended };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    // Also when onLine threw: the tool must not run on unobserved.
    await group.terminate();
    await jail?.release();
  }
}

/**
 * bwrap exits with 128 + the signal's number when what it runs is killed by a signal, as a
 * shell does: the step was killed (a crash, the kernel's OOM killer), not failed by its tool.
 */
function asReportedByWrapper<T extends { exitCode: number | null; signal: NodeJS.Signals | null }>(exit: T): T {
  const number = exit.exitCode === null ? 0 : exit.exitCode - 128;
  const signal = Object.entries(constants.signals).find(([, value]) => value === number)?.[0] as NodeJS.Signals | undefined;
  return signal ? { ...exit, exitCode: null, signal } : exit;
}

async function enterSandbox(options: RunStepOptions): Promise<Jail | StepResult> {
  const { command, args, cwd, env } = options;
  if (!existsSync(cwd)) return { status: 'FAILED', exitCode: null, tail: [], message: `working directory ${cwd} does not exist`, serverFault: true };
  try {
    const entered = await options.sandbox!.enter({ command, args, cwd, env });
    if (!('missing' in entered)) return entered;
    const reason = entered.missing === 'ENOENT' ? 'was not found' : 'is not executable';
    return { status: 'TOOLCHAIN_MISSING', exitCode: null, tail: [], message: `${command} ${reason} (${toolHint(command)})` };
  } catch (error) {
    return { status: 'FAILED', exitCode: null, tail: [], message: `the build sandbox could not be set up: ${(error as Error).message}`, serverFault: true };
  }
}

async function readLines(
  stream: Readable,
  name: OutputStream,
  collector: OutputCollector,
  maxLineLength: number,
): Promise<void> {
  const splitter = new LineSplitter(maxLineLength);
  stream.setEncoding('utf8');
  for await (const text of stream) await collector.add(name, splitter.push(text as string));
  await collector.add(name, splitter.end());
}

function spawnFailure({ command, cwd }: RunStepOptions, result: SpawnFailure): StepResult {
  const fail = (status: StepStatus, message: string, serverFault?: true): StepResult => ({ status, exitCode: null, tail: [], message, ...(serverFault && { serverFault }) });
  // A missing cwd is reported as ENOENT too; it is not the tool's fault.
  if (!existsSync(cwd)) return fail('FAILED', `working directory ${cwd} does not exist`, true);
  const hint = toolHint(command);
  if (result.code === 'ENOENT') return fail('TOOLCHAIN_MISSING', `${command} was not found (${hint})`);
  if (result.code === 'EACCES') return fail('TOOLCHAIN_MISSING', `${command} is not executable (${hint})`);
  return fail('FAILED', `${command} could not be started: ${result.message}`, true);
}

/** The last line the step printed, after ': ' (what went wrong, from the wrapper or bwrap); '' for none. */
function lastLine(tail: readonly string[]): string {
  const line = tail.findLast((text) => text.trim() !== '');
  return line === undefined ? '' : `: ${line}`;
}

function toolHint(command: string): string {
  return `set ${basename(command).toUpperCase().replace(/[^A-Z0-9]+/g, '_')}_BIN or put it on PATH`;
}

/** Where dependencies come from: what a dependency fetch needs, in the sandbox or not. */
export const REGISTRY_ENV = [
  'npm_config_registry',
  'NPM_CONFIG_REGISTRY',
  'PUB_HOSTED_URL',
  'FLUTTER_STORAGE_BASE_URL',
  // Set by the server for every npm fetch (dependency-policy.ts): no git dependency, no lock file.
  'npm_config_allow_git',
  'npm_config_package_lock',
  // Installs must work behind an egress proxy and a TLS-inspecting one's own CA.
  'NODE_EXTRA_CA_CERTS',
  'SSL_CERT_FILE',
  'SSL_CERT_DIR',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'http_proxy',
  'https_proxy',
  'no_proxy',
];

/** What build tools legitimately need from the server's environment. */
const INHERITED_ENV = ['PATH', 'HOME', 'USER', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR', 'npm_config_cache', 'NPM_CONFIG_CACHE', 'FLUTTER_ROOT', 'PUB_CACHE', ...REGISTRY_ENV];

/**
 * The environment of a build step: an allowlist, so server secrets (DATABASE_URL, API
 * keys, tokens) never reach code that a model wrote. `extra` wins over inherited values.
 */
export function buildEnv(
  extra: Record<string, string> = {},
  source: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  // CI makes npm and flutter non-interactive: no prompts, no progress animations. CI also
  // turns colours on in some (picocolors, so Vite): the log is plain text.
  const env: Record<string, string> = { CI: 'true', NO_COLOR: '1', FORCE_COLOR: '0' };
  for (const name of INHERITED_ENV) {
    const value = source[name];
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...extra };
}
