import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { probeBwrap } from '../src/toolchain/sandbox.js';
import { webTarget } from '../src/toolchain/web-target.js';
import { databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import { rawId, repoRoot, startAccepted, waitForEnd } from './support/generation-helpers.js';
import { hostProcessesWith, probeResults, probeScript } from './support/hostile-project.js';
import { registryUnavailable } from './support/network.js';

// The WEB target for real in the sandbox: `npm install --ignore-scripts` from the npm
// registry (the only step with network), then the real tsc and `vite build` with the
// project's own vite.config.ts, with none. It needs the registry, so it is opt-in
// (support/network.ts).

const skipReason = registryUnavailable ?? (await probeBwrap());

describe.skipIf(skipReason !== undefined)(`the real WEB toolchain in the build sandbox (${databaseKind})${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  const suite = useGeminiServer({ BUILD_SANDBOX: 'bwrap', AUTO_FIX_MAX_ROUNDS: '0' });

  it('builds an app whose vite.config.ts and postinstall probe the server, and they reach nothing', { timeout: 240_000 }, async () => {
    const marker = randomUUID().slice(0, 8);
    const apiPort = Number(new URL(suite.server.url).port);
    const probes = probeScript('reach', { serverPid: process.pid, dataDir: suite.server.dataDir, repoRoot: repoRoot.replace(/\/$/, ''), apiPort, marker });
    const packageJson = JSON.parse(webTarget.template['package.json']!) as Record<string, unknown>;
    const files: Record<string, string> = {
      'package.json': `${JSON.stringify({ ...packageJson, scripts: { ...(packageJson.scripts as object), postinstall: 'sh probes.sh' } }, null, 2)}\n`,
      'probes.sh': probes,
      // Vite runs its config as code: the build step runs the probes once more, with no network.
      'vite.config.ts': "import { execFileSync } from 'node:child_process';\nexecFileSync('sh', ['probes.sh'], { stdio: 'inherit' });\nexport default {};\n",
      'src/App.tsx': 'export default function App() {\n  return <h1>Probed</h1>;\n}\n',
    };
    const answer = Object.entries(files).map(([path, content]) => `<file path="${path}">\n${content}</file>`).join('\n');
    suite.gemini.script({ kind: 'stream', chunks: [answer], usage: { promptTokens: 10, outputTokens: 10 } });
    const project = await createProject(suite.owner.client, { target: 'WEB' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'a probing app' });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id, 230_000);

    expect(generation.error).toBeNull();
    expect(generation.status).toBe('SUCCEEDED');
    // The postinstall never ran; vite.config.ts did, and reached nothing.
    expect(generation.buildLog.filter((line) => line.step === 'install' && line.text.startsWith('PROBE'))).toEqual([]);
    const results = probeResults(generation.buildLog.filter((line) => line.step === 'build'));
    expect(Object.keys(results)).toContain('environ');
    for (const [probe, result] of Object.entries(results)) {
      if (probe === 'host-tmp' || probe === 'daemon') continue;
      expect(`${probe}: ${result}`).toMatch(new RegExp(`^${probe}: blocked`));
    }
    expect(await hostProcessesWith(`kiln-daemon-${marker}`)).toEqual([]);
    const workspace = join(suite.server.workspacesDir, rawId(project.id), rawId(generation.id));
    expect(existsSync(join(workspace, 'dist', 'index.html'))).toBe(true);
    // The npm cache is the project's own.
    expect(existsSync(join(suite.server.workspacesDir, rawId(project.id), '.cache', 'npm'))).toBe(true);
  });
});
