import { describe, expect, it, vi } from 'vitest';
import { DEFAULT_SANDBOX_UID } from '../src/config.js';
import { createLogger } from '../src/observability/logger.js';
import { createBuildSandbox, probeBwrap } from '../src/toolchain/sandbox.js';
import { LogCapture } from './support/log-capture.js';

// What a start costs in sandbox probes: each is a bwrap run (a few processes, a sandbox set up
// and torn down) while the server waits to start.

const started = vi.hoisted(() => ({ bwrapRuns: 0 }));
vi.mock('../src/toolchain/spawner.js', async (importOriginal) => {
  const spawner = await importOriginal<typeof import('../src/toolchain/spawner.js')>();
  return {
    ...spawner,
    runProcess: (...args: Parameters<typeof spawner.runProcess>) => {
      const [{ command, args: words }] = args;
      if ([command, ...words].includes('/usr/bin/bwrap')) started.bwrapRuns++;
      return spawner.runProcess(...args);
    },
  };
});

const bwrapProblem = await probeBwrap();
const rootServer = process.getuid?.() === 0;
const why = bwrapProblem ? ` (skipped: ${bwrapProblem})` : !rootServer ? ' (skipped: only a root server switches its steps to another user)' : '';
const LIMITS = { memoryMb: 512, maxProcesses: 128, workspaceMb: 64, tmpMb: 32 };

describe.skipIf(why !== '')(`a root server's start${why}`, () => {
  it('probes bwrap once where its steps can run as another user', async () => {
    started.bwrapRuns = 0;
    const sandbox = await createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: LIMITS }, createLogger('silent'));
    expect(sandbox.hostUid).toBe(DEFAULT_SANDBOX_UID);
    expect(started.bwrapRuns).toBe(1);
  });

  it('still finds what works, and says so, where the switch does not', async () => {
    const logs = new LogCapture();
    // Seven bytes: not a filter bwrap loads, and without one the steps are not switched.
    const sandbox = await createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: LIMITS }, createLogger('info', logs), Buffer.alloc(7));
    expect([sandbox.kind, sandbox.hostUid]).toEqual(['bwrap', 0]);
    const warnings = logs.records().filter((record) => record.level === 40);
    expect(warnings.map((record) => record.msg)).toEqual([
      expect.stringMatching(/^bwrap works here, but not with the seccomp filter/),
      expect.stringMatching(/^build steps run as the host's root user/),
    ]);
    expect(warnings[1]?.problem).toBe('the seccomp filter, which refuses nested user namespaces there, does not load here');
  });
});
