import { spawn, spawnSync } from 'node:child_process';
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readlink, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/observability/logger.js';
import { readProcStat } from '../src/proc-stat.js';
import { findCgroups } from '../src/toolchain/cgroups.js';
import { type BuildSandbox, createBuildSandbox, type Jail, PDEATHSIG_HOLDER, probeBwrap, SLEEPING_HOLDER, type StepSandbox } from '../src/toolchain/sandbox.js';
import { buildEnv, runStep } from '../src/toolchain/step-runner.js';

// A sandbox that fails before the build tool runs is the server's failure, not the project's:
// the pipeline ends such a run INTERNAL instead of paying for a fix round (build.ts, serverFault).
// And the user namespace's holder, a root process, never outlives the shell that made it.

const bwrapProblem = await probeBwrap();
const why = bwrapProblem ? ` (skipped: ${bwrapProblem})` : '';
const LIMITS = { memoryMb: 512, maxProcesses: 128, workspaceMb: 64, tmpMb: 32 };
const rootServer = process.getuid?.() === 0;
const notRootWhy = rootServer ? '' : ' (skipped: only a root server makes a user namespace per step)';
const cgroupsWhy = (await findCgroups()) ? '' : ' (skipped: this server may not create a cgroup)';
// The holder dies with its wrapper only where setpriv has --pdeathsig (util-linux 2.33); elsewhere it sleeps out its 10 minutes.
const setprivKillsWithParent = spawnSync('/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', '/usr/bin/true']).status === 0;

describe.skipIf(bwrapProblem !== undefined)(`a build sandbox that fails before its tool runs${why}`, () => {
  let sandbox: BuildSandbox;
  let root: string;
  let workspace: string;
  let tool: string;

  beforeAll(async () => {
    sandbox = await createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: LIMITS }, createLogger('silent'));
  });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-sandbox-setup-'));
    workspace = join(root, 'workspaces', 'project', 'generation');
    await mkdir(workspace, { recursive: true });
    if (sandbox.stepOwner) await chown(workspace, sandbox.stepOwner.uid, sandbox.stepOwner.gid);
    await mkdir(join(root, 'sdk', 'bin'), { recursive: true });
    tool = join(root, 'sdk', 'bin', 'tool');
    await writeFile(tool, '#!/bin/sh\nexec sh -c "$1"\n');
    await chmod(tool, 0o755);
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** The suite's sandbox, with `spoil` done to each step's jail between entering and starting it. */
  function spoiled(spoil: (jail: Jail) => Promise<void>): StepSandbox {
    const real = sandbox.forStep({ tool: 'flutter', fetch: false, cacheDir: join(root, 'workspaces', 'project', '.cache') })!;
    return {
      async enter(step) {
        const jail = await real.enter(step);
        if (!('missing' in jail)) await spoil(jail);
        return jail;
      },
    };
  }

  function run(script: string, stepSandbox: StepSandbox = spoiled(async () => undefined), cwd = workspace) {
    return runStep({ command: tool, args: [script], cwd, env: buildEnv(), timeoutMs: 30_000, killGraceMs: 200, onLine: () => undefined, sandbox: stepSandbox });
  }

  /** A step's wrapper command, to run (or spoil first) by hand. */
  async function stepJail(): Promise<Jail> {
    return (await sandbox.forStep({ tool: 'flutter', fetch: false, cacheDir: join(root, 'workspaces', 'project', '.cache') })!.enter({ command: tool, args: ['true'], cwd: workspace, env: buildEnv() })) as Jail;
  }

  it("reports a tool that exits 125 itself as the tool's failure, as any other code", async () => {
    const result = await run('exit 125');
    expect(result).toMatchObject({ status: 'FAILED', exitCode: 125, message: 'exited with code 125' });
    expect(result.serverFault).toBeUndefined();
  });

  it.skipIf(cgroupsWhy !== '')(`reports a step whose cgroup is gone before it could join as the server's failure, with no exit code of the tool's${cgroupsWhy}`, async () => {
    // Removed meanwhile (an operator, systemd): the wrapper cannot join it and exits 125.
    const result = await run('echo ran', spoiled(async (jail) => {
      for (const procs of jail.args.filter((arg) => arg.endsWith('/cgroup.procs'))) await rmdir(dirname(procs));
    }));
    expect(result).toMatchObject({ status: 'FAILED', exitCode: null, serverFault: true });
    expect(result.message).toMatch(/^the build sandbox failed before tool started \(it exited with code 125\): .*cgroup\.procs/);
    expect(result.tail).not.toContain('ran');
  });

  it("reports bwrap's own failure to set the sandbox up (its exit 1) as the server's", async () => {
    // The toolchain folder bwrap is to bind is gone by the time it starts.
    const result = await run('echo ran', spoiled(() => rm(join(root, 'sdk'), { recursive: true })));
    expect(result).toMatchObject({ status: 'FAILED', exitCode: null, serverFault: true });
    expect(result.message).toMatch(/^the build sandbox failed before tool started \(it exited with code 1\): bwrap: /);
  });

  it("runs a step whose workspace lies under the host's /tmp/home, the sandbox's HOME", async () => {
    // bwrap makes /tmp/home on the way to the bind; the step's HOME is then that folder.
    const made = await mkdir('/tmp/home', { recursive: true });
    const dir = await mkdtemp('/tmp/home/kiln-sandbox-setup-');
    try {
      const inner = join(dir, 'generation');
      await mkdir(inner);
      if (sandbox.stepOwner) await chown(inner, sandbox.stepOwner.uid, sandbox.stepOwner.gid);
      const result = await run('echo ran in "$PWD"', spoiled(async () => undefined), inner);
      expect(result).toMatchObject({ status: 'SUCCEEDED', exitCode: 0, tail: [`ran in ${inner}`] });
    } finally {
      await rm(dir, { recursive: true, force: true });
      if (made) await rmdir('/tmp/home');
    }
  });

  describe.skipIf(!rootServer)(`on a root server${notRootWhy}`, () => {
    it("reports a workspace an earlier step's code closed to the next step as the project's failure, not the sandbox's", async () => {
      expect(await run('chmod 0 .')).toMatchObject({ status: 'SUCCEEDED' });
      const result = await run('echo ran');
      expect(result).toMatchObject({ status: 'FAILED', message: expect.stringMatching(/^exited with code \d+$/) });
      expect(result.serverFault).toBeUndefined();
      expect(result.tail.join('\n')).toMatch(/can't cd|Permission denied/);
    });

    it("reports a user namespace whose maps the kernel refuses as the server's failure", async () => {
      const result = await run('echo ran', spoiled(async (jail) => void (jail.args[stepUidIndex(jail)] = '4294967295')));
      expect(result).toMatchObject({ status: 'FAILED', exitCode: null, serverFault: true });
      // dash's printf writes the maps where dash is installed, dd elsewhere.
      expect(result.message).toMatch(/\(it exited with code 125\): (could not write the user namespace's uid_map|\/usr\/bin\/dd: error writing '\/proc\/\d+\/uid_map': Invalid argument)$/);
    });

    it('kills the namespace holder, root\'s, with the wrapper shell that made it, when that is killed mid-set-up', async () => {
      // A wrapper held in its set-up: the uid map is refused, and the message saying so waits on a full stderr.
      const jail = await stepJail();
      jail.args[stepUidIndex(jail)] = '4294967295';
      const fifo = join(root, 'stderr');
      expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
      const filler = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
      const stderr = openSync(fifo, constants.O_WRONLY);
      try {
        for (;;) writeSync(filler, Buffer.alloc(4096));
      } catch (error) {
        expect((error as NodeJS.ErrnoException).code).toBe('EAGAIN');
      }
      const wrapper = spawn(jail.command, jail.args, { env: jail.env, detached: true, stdio: ['ignore', 'ignore', stderr, 'pipe'] });
      let holder: number | undefined;
      try {
        const exited = new Promise((resolve) => wrapper.once('exit', resolve));
        holder = await holderOf(wrapper.pid!);
        wrapper.kill('SIGKILL');
        await exited;
        expect(await endsWithin(holder, 10_000)).toBe(true);
      } finally {
        closeSync(filler);
        closeSync(stderr);
        try {
          process.kill(-wrapper.pid!, 'SIGKILL');
        } catch {
          // the group is gone already
        }
        if (holder !== undefined && !(await endsWithin(holder, 0))) process.kill(holder, 'SIGKILL');
        await jail.release();
      }
    });

    it.each([
      ['the uid map is refused', /could not write the user namespace's uid_map|error writing '\/proc\/\d+\/uid_map'/, (jail: Jail): void => void (jail.args[stepUidIndex(jail)] = '4294967295')],
      [
        'the namespace cannot be opened',
        /cannot open \/proc\/\d+\/ns\/none|\/proc\/\d+\/ns\/none: No such file/,
        (jail: Jail): void => rewriteScript(jail, 'exec 5</proc/$h/ns/user', 'exec 5</proc/$h/ns/none'),
      ],
    ] as const)('reaps the namespace holder it killed before it ends a failed set-up (%s): none is left for init to reap', async (_case, message, spoil) => {
      const jail = await stepJail();
      try {
        spoil(jail);
        // Told from inside, as the wrapper ends: a holder not reaped by then (a zombie, left in the step's process group for init) makes it end with 99.
        rewriteScript(jail, 'exit 125; }', '[ -e /proc/$h ] && exit 99; exit 125; }');
        const { code, stderr } = await runWrapper(jail);
        expect({ code, lastLine: stderr.trim().split('\n').at(-1) }).toEqual({ code: 125, lastLine: expect.stringMatching(message) });
      } finally {
        await jail.release();
      }
    });

    it("runs a step with the holder of hosts whose setpriv has no --pdeathsig (a sleep), and reaps it before bwrap starts", async () => {
      const jail = await stepJail();
      try {
        if (setprivKillsWithParent) rewriteScript(jail, PDEATHSIG_HOLDER, SLEEPING_HOLDER);
        // Told from inside: a holder not reaped once fd 5 is open makes the wrapper end with 99 instead of going on to bwrap.
        rewriteScript(jail, 'kill -KILL $h; wait $h 2>/dev/null', 'kill -KILL $h; wait $h 2>/dev/null; [ -e /proc/$h ] && exit 99');
        // The step's tool runs `true`: 0 only once the namespace, bwrap, the user switch and the tool all worked.
        expect(await runWrapper(jail)).toEqual({ code: 0, stderr: '' });
      } finally {
        await jail.release();
      }
    });

    it.skipIf(!setprivKillsWithParent)("kills the namespace holder with a wrapper that ends after writing the maps, the holder's shell already stopped", async () => {
      // The holder's parent-death signal must outlive the maps: an exec after uid 0 is mapped gains capabilities, and the kernel then clears it.
      const jail = await stepJail();
      let holder = Number.NaN;
      try {
        // Instead of opening the namespace: wait for the holder to stop itself, say which it is, and end without killing it.
        rewriteScript(jail, 'command exec 5</proc/$h/ns/user', `until grep -q '^State:[[:space:]]*T' /proc/$h/status; do :; done; echo "holder $h" >&2; exit 0`);
        const { code, stderr } = await runWrapper(jail);
        holder = Number(/holder (\d+)/.exec(stderr)?.[1]);
        expect({ code, holder: Number.isInteger(holder) }).toEqual({ code: 0, holder: true });
        expect(await endsWithin(holder, 10_000)).toBe(true);
      } finally {
        if (Number.isInteger(holder) && !(await endsWithin(holder, 0))) process.kill(holder, 'SIGKILL');
        await jail.release();
      }
    });
  });
});

/** The wrapper's script with `from`, which must be in it, replaced by `to`. */
function rewriteScript(jail: Jail, from: string, to: string): void {
  const script = jail.args.indexOf('-c') + 1;
  expect(jail.args[script]).toContain(from);
  jail.args[script] = jail.args[script]!.replaceAll(from, to);
}

/** Runs a step's wrapper by hand, its info pipe (fd 3) open: its exit code and what it said on stderr. */
async function runWrapper(jail: Jail): Promise<{ code: number | null; stderr: string }> {
  const wrapper = spawn(jail.command, jail.args, { env: jail.env, detached: true, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  wrapper.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => wrapper.once('close', resolve));
  return { code, stderr };
}

/** Where the steps' host uid is in a root server's wrapper command: right after the cgroups' `--`. */
function stepUidIndex(jail: Jail): number {
  return jail.args.indexOf('--') + 1;
}

/** The child of `parent` in a user namespace of its own (the namespace's holder), once there is one. */
async function holderOf(parent: number): Promise<number> {
  const ours = await readlink('/proc/self/ns/user');
  for (;;) {
    for (const name of await readdir('/proc')) {
      const pid = Number(name);
      if (!Number.isInteger(pid)) continue;
      if ((await readProcStat(pid))?.ppid !== parent) continue;
      const namespace = await readlink(`/proc/${pid}/ns/user`).catch(() => ours);
      if (namespace !== ours) return pid;
    }
    await delay(10);
  }
}

/** Whether `pid` has ended (or waits to be reaped) within `ms`. */
async function endsWithin(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    const state = (await readProcStat(pid))?.state;
    if (state === undefined || state === 'Z') return true;
    if (Date.now() >= deadline) return false;
    await delay(20);
  }
}
