import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildProcessesUnder } from '../../src/jobs/orphans.js';

// What the recovery tick takes for a build left behind by a killed worker: a process of the
// build steps' user working in a generation's workspace. An operator's shell in that folder
// (another user: root, where steps run as the sandbox's user) is no build, and is left alone.

describe.skipIf(process.platform !== 'linux')('build processes left in a workspace', () => {
  it("finds a process of the steps' user working in a generation's workspace, and never another user's", async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'kiln-orphans-'));
    const generationId = randomUUID();
    const workspace = path.join(root, randomUUID(), generationId, 'lib');
    await mkdir(workspace, { recursive: true });
    const build = spawn('sleep', ['600'], { cwd: workspace, stdio: 'ignore' });
    try {
      await once(build, 'spawn');
      const uid = process.getuid!();
      expect(await buildProcessesUnder(root, uid)).toContainEqual(expect.objectContaining({ pid: build.pid, generationId }));
      expect((await buildProcessesUnder(root, uid + 1)).map((found) => found.pid)).not.toContain(build.pid);
    } finally {
      build.kill('SIGKILL');
      await rm(root, { recursive: true, force: true });
    }
  });
});
