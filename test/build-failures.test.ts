import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, realpath, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { databaseKind } from './support/db.js';
import { fixesOf } from './support/fix-rounds.js';
import { createProject } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import { type Generation, startAccepted, waitForEnd } from './support/generation-helpers.js';
import { useSdkFakes } from './support/hostile-project.js';
import { useStarted } from './support/lifecycle.js';

// A WEB build that fails as Vite 6 really fails (test/fixtures/vite6/, colours and stack
// traces included), seen by the project's owner: its diagnostics, the fix round they lead
// to, the error message and the build log. The workspaces are reached through a symlink, as
// with a symlinked DATA_DIR: Vite prints the real path. The fake npm runs the project's
// vite.config.js as Vite runs its config; there the captured output is printed.

/** Where the captured app was built; the config prints its own workspace instead. */
const CAPTURED_APP = '/tmp/review-toolchain/app';
const captured = (name: string) => readFileSync(new URL(`./fixtures/vite6/${name}.out`, import.meta.url), 'utf8');

/** A vite.config.js that fails as `vite build` failed in the capture `name`, then ends as `end` says. */
const failingViteConfig = (name: string, end = 'process.exit(1);') => `process.stderr.write(${JSON.stringify(captured(name))}.replaceAll(${JSON.stringify(CAPTURED_APP)}, process.cwd()));
${end}
`;
const WORKING_VITE_CONFIG = 'export default {};\n';

const fileBlocks = (files: Record<string, string>) =>
  Object.entries(files)
    .map(([path, content]) => `<file path="${path}">\n${content}</file>`)
    .join('\n');

describe(`a failed vite build in a symlinked WORKSPACES_DIR (${databaseKind})`, () => {
  const sdks = useSdkFakes();
  const workspaces = useStarted(async () => {
    const root = await realpath(await mkdtemp(join(tmpdir(), 'kiln-linked-')));
    await mkdir(join(root, 'real'));
    await symlink(join(root, 'real'), join(root, 'link'));
    return { link: join(root, 'link'), real: join(root, 'real'), stop: () => rm(root, { recursive: true, force: true }) };
  });
  const suite = useGeminiServer(() => ({ ...sdks.kilnEnv, WORKSPACES_DIR: workspaces.link, AUTO_FIX_MAX_ROUNDS: '1' }));

  async function generate(maxFixRounds: number, ...answers: Record<string, string>[]): Promise<{ generation: Generation; requests: string[] }> {
    suite.gemini.script(...answers.map((files) => ({ kind: 'stream' as const, chunks: [`Here it is.\n${fileBlocks(files)}\n`], usage: { promptTokens: 10, outputTokens: 10 } })));
    const before = suite.gemini.requests.length;
    const project = await createProject(suite.owner.client, { target: 'WEB' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'an app', maxFixRounds });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id, 60_000);
    const requests = suite.gemini.requests.slice(before).map((request) => request.body.contents.at(-1)!.parts[0]!.text!);
    return { generation, requests };
  }

  it('hands a CSS error back with the file it names, and the fix round heals it', async () => {
    const css = '@import "./missing.css";\n';
    const { generation, requests } = await generate(
      1,
      { 'src/App.css': css, 'vite.config.js': failingViteConfig('cssimport') },
      { 'src/App.css': '.app { color: red; }\n', 'vite.config.js': WORKING_VITE_CONFIG },
    );

    expect(generation.status).toBe('SUCCEEDED');
    expect((await fixesOf(suite.owner.client, generation.id)).diagnostics).toEqual([
      { round: 0, tool: 'vite', severity: 'ERROR', path: 'src/App.css', line: null, column: null, code: null, message: "[postcss] ENOENT: no such file or directory, open './missing.css'" },
    ]);
    expect(requests).toHaveLength(2);
    expect(requests[1]).toContain("- src/App.css error (vite): [postcss] ENOENT: no such file or directory, open './missing.css'");
    expect(requests[1]).toContain(`<file path="src/App.css">\n${css}</file>`);
  });

  it("fails with Vite's error as its message, and keeps a plain build log without the server's paths", async () => {
    const { generation } = await generate(0, { 'vite.config.js': failingViteConfig('unresolved') });

    expect(generation.status).toBe('FAILED');
    expect(generation.error).toEqual({
      code: 'BUILD_FAILED',
      message: 'Build step "build" failed (exit code 1).\nsrc/App.tsx: Rollup failed to resolve import "lodash" from "src/App.tsx".',
    });
    const log = generation.buildLog.filter((line) => line.step === 'build').map((line) => line.text);
    expect(log).toContain('✗ Build failed in 109ms');
    expect(log).toContain('[vite]: Rollup failed to resolve import "lodash" from "src/App.tsx".');
    expect(log).toContain('    at viteLog (file://node_modules/vite/dist/node/chunks/dep-Cohbwjf9.js:46698:15)');
    for (const text of log) {
      expect(text).not.toContain('\u001b');
      expect(text).not.toContain(workspaces.real);
      expect(text).not.toContain(workspaces.link);
    }
  });

  it('starts no fix round for a build killed before it ended, whatever it printed', async () => {
    // The config prints a located error, then kills the build tool (as a limit or an OOM killer would).
    const { generation, requests } = await generate(1, { 'vite.config.js': failingViteConfig('esbuild', "process.kill(process.ppid, 'SIGKILL');\nsetInterval(() => {}, 1000);") });

    expect(generation.status).toBe('FAILED');
    expect(generation.error?.code).toBe('BUILD_FAILED');
    expect(generation.error?.message).toMatch(/^Build step "build" failed \(killed by SIGKILL\)\./);
    expect(requests).toHaveLength(1);
    const fixes = await fixesOf(suite.owner.client, generation.id);
    expect(fixes.diagnostics).toEqual([]);
    expect(fixes.fixRounds).toEqual([]);
  });
});
