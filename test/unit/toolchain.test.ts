import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { readProcStat } from '../../src/proc-stat.js';
import { limitMessages, readDuOutput } from '../../src/toolchain/step-limits.js';
import { buildEnv, runStep, type OutputLine, type RunStepOptions } from '../../src/toolchain/step-runner.js';

const fakeBin = fileURLToPath(new URL('../fixtures/bin', import.meta.url));

let workspace: string;
beforeEach(async () => {
  workspace = await mkdtemp(join(tmpdir(), 'kiln-toolchain-'));
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await rm(workspace, { recursive: true, force: true });
});

/** Runs the fake flutter (or another command) in a fresh workspace and collects every delivered line. */
async function run(args: string[], fake: Record<string, string>, options: Partial<RunStepOptions> = {}) {
  const lines: OutputLine[] = [];
  const result = await runStep({
    command: 'flutter',
    args,
    cwd: workspace,
    env: buildEnv({ PATH: `${fakeBin}:${process.env.PATH}`, ...fake }),
    timeoutMs: 30_000,
    onLine: (line) => {
      lines.push(line);
    },
    ...options,
  });
  const texts = (stream: OutputLine['stream']) => lines.filter((l) => l.stream === stream).map((l) => l.text);
  return { result, lines, stdout: texts('STDOUT'), stderr: texts('STDERR') };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('runStep', () => {
  it('delivers the lines of both streams in order and succeeds on exit code 0', async () => {
    const { result, stdout, stderr } = await run(['pub', 'get'], { FAKE_FLUTTER_MODE: 'ok' });

    expect(result).toMatchObject({ status: 'SUCCEEDED', exitCode: 0 });
    expect(stdout).toEqual(['Resolving dependencies...', 'Downloading packages...', 'Got dependencies!']);
    expect(stderr).toEqual(['1 package has newer versions incompatible with dependency constraints.']);
    expect(result.tail).toHaveLength(4);
  });

  it('fails with the exit code and the analyzer error when analysis finds an error', async () => {
    const { result, stdout } = await run(['analyze'], { FAKE_FLUTTER_MODE: 'analyze-fail' });

    expect(result).toMatchObject({ status: 'FAILED', exitCode: 1, message: 'exited with code 1' });
    const errorLine = "  error - lib/main.dart:3:5 - Undefined name 'runAp'. - undefined_identifier";
    expect(stdout).toContain(errorLine);
    expect(result.tail).toContain(errorLine);
  });

  it('kills the whole process tree, grandchild included, on timeout', async () => {
    const pidFile = join(workspace, 'grandchild.pid');
    const { result, stdout } = await run(
      ['pub', 'get'],
      { FAKE_FLUTTER_MODE: 'hang', FAKE_FLUTTER_PIDFILE: pidFile },
      { timeoutMs: 1_000, killGraceMs: 200 },
    );

    expect(result).toMatchObject({ status: 'TIMED_OUT', exitCode: null });
    expect(stdout).toHaveLength(1);
    expect(isAlive(Number(await readFile(pidFile, 'utf8')))).toBe(false);
  });

  it('kills the whole process tree, grandchild included, when cancelled', async () => {
    const pidFile = join(workspace, 'grandchild.pid');
    const cancel = new AbortController();
    const { result } = await run(
      ['pub', 'get'],
      { FAKE_FLUTTER_MODE: 'hang', FAKE_FLUTTER_PIDFILE: pidFile },
      { signal: cancel.signal, killGraceMs: 200, onLine: () => cancel.abort() },
    );

    expect(result).toMatchObject({ status: 'CANCELLED', exitCode: null });
    expect(isAlive(Number(await readFile(pidFile, 'utf8')))).toBe(false);
  });

  it('stops a step cancelled while it is being started, instead of letting it run to its timeout', async () => {
    const cancel = new AbortController();
    const running = run(['pub', 'get'], { FAKE_FLUTTER_MODE: 'hang', FAKE_FLUTTER_PIDFILE: join(workspace, 'grandchild.pid') }, { signal: cancel.signal, killGraceMs: 200 });
    // runStep has checked the signal and is starting the process: a shutdown or a user's cancel comes now.
    cancel.abort();
    expect((await running).result).toMatchObject({ status: 'CANCELLED', exitCode: null });
  });

  it('streams 300 MB of output with bounded memory, capping the delivered lines', async () => {
    const megabytes = 300;
    const floodLineBytes = 85; // the fake's flood line plus its newline
    const totalLines = Math.ceil((megabytes * 1024 * 1024) / floodLineBytes);
    const used = () => {
      const usage = process.memoryUsage();
      return usage.heapUsed + usage.arrayBuffers;
    };
    const before = used();
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, used());
    }, 10);

    const { result, lines } = await run(['build', 'web'], { FAKE_FLUTTER_MODE: 'flood', FAKE_FLUTTER_MB: String(megabytes) });
    clearInterval(sampler);

    expect(result.status).toBe('SUCCEEDED');
    expect(lines).toHaveLength(10_001);
    expect(lines.at(-1)?.text).toBe(`[… ${totalLines - 10_000} more lines omitted]`);
    expect(result.tail).toHaveLength(200);
    expect(peak - before).toBeLessThan(100 * 1024 * 1024);
  });

  it('cuts an overlong line and marks the cut', async () => {
    const { result, stdout } = await run([], {}, {
      command: 'sh',
      args: ['-c', 'head -c 1000000 /dev/zero | tr "\\0" x; echo; echo next'],
    });

    expect(result.status).toBe('SUCCEEDED');
    expect(stdout).toEqual([`${'x'.repeat(3_999)}…`, 'next']);
  });

  it('shows a NUL a tool prints as U+FFFD: no text column takes NUL, and the log must still be stored', async () => {
    const { result, stdout } = await run([], {}, { command: 'sh', args: ['-c', 'printf "a\\000b\\n"'] });

    expect(result.status).toBe('SUCCEEDED');
    expect(stdout).toEqual(['a\uFFFDb']);
  });

  it('reports a missing tool by name instead of hanging', async () => {
    const { result } = await run(['pub', 'get'], { PATH: workspace });

    expect(result.status).toBe('TOOLCHAIN_MISSING');
    expect(result.message).toBe('flutter was not found (set FLUTTER_BIN or put it on PATH)');
  });

  it('keeps server secrets out of the child environment', async () => {
    vi.stubEnv('DATABASE_URL', 'postgres://kiln:server-secret@db/kiln');
    vi.stubEnv('GEMINI_API_KEY', 'server-secret-key');

    const { result, stdout } = await run([], { FAKE_FLUTTER_MODE: 'ok' }, { command: 'env' });

    expect(result.status).toBe('SUCCEEDED');
    expect(stdout).toContain('FAKE_FLUTTER_MODE=ok');
    expect(stdout.some((line) => line.startsWith('PATH='))).toBe(true);
    expect(stdout.join('\n')).not.toMatch(/server-secret|DATABASE_URL|GEMINI_API_KEY/);
  });

  it('starts the step from a helper process, not by forking the server', async () => {
    const { result, stdout } = await run([], {}, { command: 'sh', args: ['-c', 'echo "$PPID"'] });

    expect(result.status).toBe('SUCCEEDED');
    const parent = Number(stdout[0]);
    expect(parent).toBeGreaterThan(0);
    expect(parent).not.toBe(process.pid);
    // The helper holds none of the server's environment.
    expect(await readFile(`/proc/${parent}/environ`, 'utf8')).not.toMatch(/PATH=|DATABASE_URL/);
    // Nor is it in the server's process group, which a Ctrl-C reaches while shutdown waits for running steps.
    expect((await readProcStat(parent))!.pgrp).not.toBe((await readProcStat(process.pid))!.pgrp);
  });

  it('passes a step no descriptor the server inherited', async () => {
    // A supervisor may leave a pipe or socket open without close-on-exec: this server inherits fd 200
    // (Node itself marks the lowest few close-on-exec at start).
    const script = `import { buildEnv, runStep } from ${JSON.stringify(new URL('../../src/toolchain/step-runner.ts', import.meta.url).href)};
      const result = await runStep({ command: 'ls', args: ['/proc/self/fd'], cwd: ${JSON.stringify(workspace)}, env: buildEnv({ PATH: process.env.PATH }),
        timeoutMs: 30_000, onLine: (line) => console.log('fd', line.text) });
      console.log('status', result.status);
      process.exit(0);`;
    // The shell's redirection leaves it open across exec, as a supervisor's would.
    const server = spawn('/bin/bash', ['-c', 'exec "$0" "$@" 200</dev/null', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    for await (const chunk of server.stdout!) output += String(chunk);
    const lines = output.split('\n');

    expect(lines).toContain('status SUCCEEDED');
    const open = lines.filter((line) => line.startsWith('fd ')).map((line) => line.slice(3));
    expect(open).toEqual(expect.arrayContaining(['0', '1', '2']));
    expect(open).not.toContain('200');
  });

  it('fails a running step when the helper stops, leaves nothing of it running, and starts a new helper for the next', async () => {
    const pidFile = join(workspace, 'grandchild.pid');
    let helper = 0;
    const { result } = await run(
      [],
      { FAKE_FLUTTER_MODE: 'hang', FAKE_FLUTTER_PIDFILE: pidFile },
      {
        command: 'sh',
        args: ['-c', 'echo "$PPID"; exec flutter pub get'],
        timeoutMs: 10_000,
        killGraceMs: 200,
        onLine: (line) => {
          if (helper === 0) helper = Number(line.text);
          // Once the grandchild's pid is written; never this process (a step forked from it would time out instead).
          else if (line.text.startsWith('Waiting') && helper !== process.pid) process.kill(helper, 'SIGKILL');
        },
      },
    );

    expect(result).toMatchObject({ status: 'FAILED', exitCode: null, message: 'the process spawner stopped' });
    expect(isAlive(Number(await readFile(pidFile, 'utf8')))).toBe(false);
    // A helper that cannot start fails the step rather than leaving it waiting.
    const execPath = process.execPath;
    process.execPath = join(workspace, 'no-node-here');
    try {
      const unstarted = await run([], {}, { command: 'sh', args: ['-c', 'echo "$PPID"'] });
      expect(unstarted.result).toMatchObject({ status: 'FAILED', message: 'sh could not be started: the process spawner stopped' });
    } finally {
      process.execPath = execPath;
    }
    const next = await run([], {}, { command: 'sh', args: ['-c', 'echo "$PPID"'] });
    expect(next.result.status).toBe('SUCCEEDED');
    expect(Number(next.stdout[0])).not.toBe(helper);
  });
});

describe('the workspace disk limit, from what du says', () => {
  // A server that is not root cannot read a folder its build took the owner's rights from
  // (`chmod 300`); du then totals the rest. As root du reads everything, so the test runs du
  // as another user (nobody), who cannot read it either.
  const asNobody = process.getuid?.() === 0;
  const duProblem = asNobody && spawnSync('setpriv', ['--version']).status !== 0 ? 'running as root without setpriv to run du as another user' : undefined;

  function du(path: string) {
    const command = ['du', '-s', '-x', '-B1', '--', path];
    const [bin, ...args] = asNobody ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...command] : command;
    const result = spawnSync(bin!, args, { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } });
    return { exitCode: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr, timedOut: false };
  }

  it.skipIf(duProblem !== undefined)(`does not pass a workspace part of which du could not read${duProblem ? ` (skipped: ${duProblem})` : ''}`, async () => {
    await chmod(workspace, 0o755);
    await writeFile(join(workspace, 'package.json'), '{}');
    await mkdir(join(workspace, 'h'));
    await writeFile(join(workspace, 'h', 'hidden.bin'), Buffer.alloc(4 * 1024 * 1024, 1));
    await chmod(join(workspace, 'h'), 0o300);
    let output: ReturnType<typeof du>;
    try {
      output = du(workspace);
    } finally {
      await chmod(join(workspace, 'h'), 0o700);
    }

    // du's own total leaves the 4 MB out: taken as it is, the limit is passed around.
    expect(output.stderr).toMatch(/Permission denied/);
    expect(Number(output.stdout.split('\t')[0])).toBeLessThan(4 * 1024 * 1024);
    expect(readDuOutput(output, 1)).toBe('unreadable');
    expect(limitMessages.unreadable({ memoryMb: 512, maxProcesses: 64, workspaceMb: 100, tmpMb: 32 })).toBe(
      'The build made part of its workspace unreadable, so its size could not be held to 100 MB (BUILD_MAX_WORKSPACE_MB), and it was stopped.',
    );
  });

  it('counts a workspace whose files vanish while du walks it (npm and pub delete temporary files all the time)', () => {
    const output = {
      exitCode: 1,
      signal: null,
      stdout: '73728\t/ws\n',
      stderr: [
        "du: cannot access '/ws/node_modules/.staging/react-1a2b3c/package.json': No such file or directory",
        "du: cannot read directory '/ws/node_modules/.tmp-install': No such file or directory",
        "du: cannot read directory '/ws/.dart_tool/tmp': Not a directory",
        '',
      ].join('\n'),
      timedOut: false,
    };
    expect(readDuOutput(output, 1)).toEqual({ total: 73728 });
    // One unreadable folder among the vanished files still fails it.
    const hidden = { ...output, stderr: `${output.stderr}du: cannot read directory '/ws/h': Permission denied\n` };
    expect(readDuOutput(hidden, 1)).toBe('unreadable');
  });

  it('adds up the folders du measured, and leaves it to the walk in Node when there is no du to ask', () => {
    expect(readDuOutput({ exitCode: 0, signal: null, stdout: '4096\t/ws\n8192\t/cache\n', stderr: '', timedOut: false }, 2)).toEqual({ total: 12288 });
    expect(readDuOutput({ code: 'ENOENT', message: 'spawn du ENOENT' }, 1)).toBeUndefined();
    expect(readDuOutput({ exitCode: null, signal: 'SIGKILL', stdout: '', stderr: '', timedOut: true }, 1)).toBeUndefined();
  });
});
