import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { findCgroups } from '../src/toolchain/cgroups.js';
import { probeBwrap } from '../src/toolchain/sandbox.js';
import { databaseKind } from './support/db.js';
import { createProject, signUp, type TestUser } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import { type Generation, rawId, repoRoot, startAccepted, waitForEnd } from './support/generation-helpers.js';
import { hostileAnswer, hostProcessesWith, type ProbeKind, probeResults, useSdkFakes } from './support/hostile-project.js';

// Generated code is hostile: a project a model was steered into writing runs probes as
// project code on each target (WEB: its vite.config.js, and a `postinstall`;
// FLUTTER: a build hook) and prints what it reached into the build log. Every probe must
// fail, a fork bomb, an 8 GB allocation and a 10 GB file each end the build with a clear
// error, the server stays healthy, and an honest project still builds.

const bwrapProblem = await probeBwrap();
const why = bwrapProblem ? ` (skipped: ${bwrapProblem})` : '';
// Without a cgroup a fork bomb is stopped by RLIMIT_NPROC where the steps are not the host's root,
// else only by the /proc watch, seconds later and after the whole machine felt it: not a test to
// run on a shared machine either way.
const forkBombSafe = (await findCgroups()) !== undefined;

const LIMITS = { BUILD_MEMORY_MB: '384', BUILD_MAX_PROCESSES: '128', BUILD_MAX_WORKSPACE_MB: '64' };

describe.skipIf(bwrapProblem !== undefined).each(['WEB', 'FLUTTER'] as const)(`hostile %s projects in the build sandbox (${databaseKind})${why}`, (target) => {
  const sdks = useSdkFakes();
  const suite = useGeminiServer(() => ({ BUILD_SANDBOX: 'bwrap', ...LIMITS, ...sdks.kilnEnv, AUTO_FIX_MAX_ROUNDS: '0' }));
  let apiPort: number;
  const marker = randomUUID().slice(0, 8);

  beforeAll(async () => {
    apiPort = Number(new URL(suite.server.url).port);
    // Something of the server's own, and another tenant's build, for the probes to look for.
    await writeFile(join(suite.server.dataDir, 'canary-secret.txt'), 'if you can read this, so can every tenant');
    const other = await signUp(suite.server);
    const otherGeneration = await build(other, 'honest');
    expect(otherGeneration.status).toBe('SUCCEEDED');
  });

  async function build(user: TestUser, kind: ProbeKind): Promise<Generation> {
    const project = await createProject(user.client, { target });
    const targets = { serverPid: process.pid, dataDir: suite.server.dataDir, repoRoot: repoRoot.replace(/\/$/, ''), apiPort, marker };
    suite.gemini.script({ kind: 'stream', chunks: [hostileAnswer(target, kind, targets)], usage: { promptTokens: 10, outputTokens: 10 } });
    const started = await startAccepted(user.client, { projectId: project.id, prompt: `a ${kind} app` });
    return waitForEnd(suite.server, user.client, user.accessToken, started.id, 60_000);
  }

  it('reaches nothing of the server, other tenants or the host, and leaves nothing running', { timeout: 90_000 }, async () => {
    const generation = await build(suite.owner, 'reach');

    expect(generation.error).toBeNull();
    expect(generation.status).toBe('SUCCEEDED');
    const results = probeResults(generation.buildLog);
    expect(Object.keys(results).sort()).toEqual(
      [
        'environ',
        'processes',
        'data-dir',
        'source',
        'server-node-modules',
        'tcp-5432',
        'tcp-6379',
        `tcp-${apiPort}`,
        'internet',
        'host-tmp',
        'server-source-write',
        'server-node-modules-write',
        'disk-reserve',
        'io-uring',
        'daemon',
      ].sort(),
    );
    for (const [probe, result] of Object.entries(results)) {
      if (probe === 'host-tmp' || probe === 'daemon') continue; // checked from the host below
      expect(`${probe}: ${result}`).toMatch(new RegExp(`^${probe}: blocked`));
    }
    // Refused by Kiln's filter (ENOSYS), not by something else on the way.
    expect(results['io-uring']).toBe('blocked (Function not implemented)');
    // What the probes wrote landed in private copies, and the daemon died with the build.
    expect(existsSync(`/tmp/kiln-hostile-${marker}`)).toBe(false);
    expect(existsSync(join(repoRoot, 'src', `hostile-${marker}.ts`))).toBe(false);
    expect(existsSync(join(repoRoot, 'node_modules', 'node', `hostile-${marker}`))).toBe(false);
    expect(await hostProcessesWith(`kiln-daemon-${marker}`)).toEqual([]);
    if (target === 'WEB') {
      // Nothing ran at install time (the real npm's --ignore-scripts: sandbox-registry.test.ts).
      expect(generation.buildLog.filter((line) => line.step === 'install' && line.text.startsWith('PROBE'))).toEqual([]);
    }
  });

  // Listed as skipped (never run as an empty pass) where no cgroup can hold a fork bomb.
  if (!forkBombSafe) it.skip('ends a fork-bomb build (skipped: no writable cgroup here to hold it)', () => undefined);

  it.each(
    (
      [
        ['fork-bomb', /reached its limit of 128 processes \(BUILD_MAX_PROCESSES\)/],
        ['memory-hog', /used more than 384 MB of memory \(BUILD_MEMORY_MB\)/],
        ['disk-filler', /wrote more than 64 MB to its workspace \(BUILD_MAX_WORKSPACE_MB\)/],
        // Empty files use no bytes, but each counts a 4 KiB block: 64 MB is 16,384 of them.
        ['file-spray', /wrote more than 64 MB to its workspace \(BUILD_MAX_WORKSPACE_MB\)/],
      ] as const
    ).filter(([kind]) => kind !== 'fork-bomb' || forkBombSafe),
  )('ends a %s build with a clear error and stays healthy', { timeout: 90_000 }, async (kind, message) => {
    const generation = await build(suite.owner, kind);

    expect(generation.status).toBe('FAILED');
    expect(generation.error?.code).toBe('BUILD_FAILED');
    expect(generation.error?.message).toMatch(message);
    expect(generation.buildLog.at(-1)?.text).toMatch(message);
    expect(Object.values(probeResults(generation.buildLog)).filter((result) => result.startsWith('REACHED'))).toEqual([]);

    const ready = await fetch(`${suite.server.url}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, sandbox: { kind: 'bwrap' } });
  });

  it('still builds an honest project', { timeout: 90_000 }, async () => {
    const generation = await build(suite.owner, 'honest');

    expect(generation.error).toBeNull();
    expect(generation.status).toBe('SUCCEEDED');
    expect(generation.buildSteps.map((step) => step.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
    const workspace = join(suite.server.workspacesDir, rawId(generation.project.id), rawId(generation.id));
    expect(existsSync(join(workspace, target === 'WEB' ? 'dist' : 'build/web', 'index.html'))).toBe(true);
  });
});

// The control: the same probes with BUILD_SANDBOX=none reach what the sandbox hides, so
// the "blocked" above is the sandbox's doing, not a broken probe.
describe(`the same probes without the sandbox (${databaseKind})`, () => {
  const sdks = useSdkFakes();
  const suite = useGeminiServer(() => ({ BUILD_SANDBOX: 'none', ...sdks.kilnEnv, AUTO_FIX_MAX_ROUNDS: '0' }));

  beforeAll(async () => {
    await writeFile(join(suite.server.dataDir, 'canary-secret.txt'), 'if you can read this, so can every tenant');
  });

  it('reach the server, its files and its port', { timeout: 60_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const marker = randomUUID().slice(0, 8);
    const targets = { serverPid: process.pid, dataDir: suite.server.dataDir, repoRoot: repoRoot.replace(/\/$/, ''), apiPort: Number(new URL(suite.server.url).port), marker };
    suite.gemini.script({ kind: 'stream', chunks: [hostileAnswer('FLUTTER', 'reach', targets)], usage: { promptTokens: 10, outputTokens: 10 } });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'a probing app' });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id, 60_000);
    try {
      const results = probeResults(generation.buildLog);
      // io_uring only where this process may use it too (a kernel switch, a container's seccomp profile).
      const ioUring = ioUringHere() ? ['io-uring'] : [];
      for (const probe of ['environ', 'processes', 'data-dir', 'source', 'server-node-modules', `tcp-${targets.apiPort}`, 'disk-reserve', ...ioUring]) {
        expect(`${probe}: ${results[probe]}`).toMatch(new RegExp(`^${probe}: REACHED`));
      }
    } finally {
      // What the unsandboxed probes left behind.
      for (const pid of await hostProcessesWith(`kiln-daemon-${marker}`)) process.kill(pid, 'SIGKILL');
      await rm(`/tmp/kiln-hostile-${marker}`, { force: true });
      await rm(join(repoRoot, 'src', `hostile-${marker}.ts`), { force: true });
      await rm(join(repoRoot, 'node_modules', 'node', `hostile-${marker}`), { force: true });
    }
  });
});

/** Whether this process may set up an io_uring (the kernel's switch, a container's seccomp profile), asked as the probe asks. */
function ioUringHere(): boolean {
  return spawnSync('perl', ['-e', 'my $params = "\\0" x 120; exit(syscall(425, 8, $params) >= 0 ? 0 : 1)']).status === 0;
}
