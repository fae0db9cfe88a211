import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { LineSplitter, truncateWithEllipsis } from '../../src/toolchain/output-lines.js';
import { createBuildSandbox, probeBwrap } from '../../src/toolchain/sandbox.js';
import { buildEnv, runStep, type RunStepOptions } from '../../src/toolchain/step-runner.js';

// What a build log line holds: the tool's text, plain (no terminal colours), whole up to
// its limit, and never half a character.

const bwrapProblem = await probeBwrap();

const lines = (splitter: LineSplitter, ...chunks: string[]) => [...chunks.flatMap((chunk) => splitter.push(chunk)), ...splitter.end()];

describe('LineSplitter', () => {
  it('keeps a line of exactly the limit whole when it ends in CRLF, in one chunk or across two', () => {
    expect(lines(new LineSplitter(10), '0123456789\r\nnext\r\n')).toEqual(['0123456789', 'next']);
    expect(lines(new LineSplitter(10), '0123456789\r', '\nnext')).toEqual(['0123456789', 'next']);
    // One more is cut, as before.
    expect(lines(new LineSplitter(10), '0123456789a\r\n')).toEqual(['012345678…']);
  });

  it('never keeps half of a surrogate pair where it cuts', () => {
    expect(lines(new LineSplitter(5), 'abc😀def\n')).toEqual(['abc…']);
    expect(truncateWithEllipsis('abc😀def', 5)).toBe('abc…');
    expect(truncateWithEllipsis('ab😀def', 5)).toBe('ab😀…');
  });

  it("leaves out terminal colours and links, as Vite 6 prints them with CI set", () => {
    // Lines of a real `vite build` (test/fixtures/vite6/cssimport.out).
    const vite = '\u001b[31m✗\u001b[39m Build failed in 416ms\n\u001b[31merror during build:\nfile: \u001b[36m/ws/src/App.css:undefined:NaN\u001b[31m\n';
    expect(lines(new LineSplitter(4000), vite)).toEqual(['✗ Build failed in 416ms', 'error during build:', 'file: /ws/src/App.css:undefined:NaN']);
    // A hyperlink (OSC 8, ended by ST or BEL), and a colour split across chunks.
    expect(lines(new LineSplitter(4000), 'see \u001b]8;;https://vite.dev\u001b\\the docs\u001b]8;;\u0007 \u001b[1', ';32mnow\u001b[0m\n')).toEqual(['see the docs now']);
    // A sequence the line limit cut in two leaves no ESC behind.
    expect(lines(new LineSplitter(8), 'abcdef\u001b[31mred\n')).toEqual(['abcdef[…']);
  });
});

describe('the colours of a build step', () => {
  let root: string;
  let workspace: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-colours-'));
    workspace = join(root, 'workspace');
    await mkdir(workspace);
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** The environment a step sees, as `NAME=value` lines. */
  async function stepEnv(options: Partial<RunStepOptions> = {}) {
    const seen: string[] = [];
    const result = await runStep({ command: 'env', args: [], cwd: workspace, env: buildEnv(), timeoutMs: 30_000, onLine: (line) => void seen.push(line.text), ...options });
    expect(result.status).toBe('SUCCEEDED');
    return seen;
  }

  it('are turned off: CI alone turns them on in picocolors, so in Vite', async () => {
    expect(await stepEnv()).toEqual(expect.arrayContaining(['CI=true', 'NO_COLOR=1', 'FORCE_COLOR=0']));
  });

  it.skipIf(bwrapProblem !== undefined)(`are turned off in the bwrap sandbox too${bwrapProblem ? ` (skipped: ${bwrapProblem})` : ''}`, async () => {
    const sandbox = await createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: { memoryMb: 512, maxProcesses: 128, workspaceMb: 64, tmpMb: 32 } }, createLogger('silent'));
    // The sandbox shows a tool's SDK root (`<sdk>/bin/tool`) and nothing else of the host.
    const tool = join(root, 'sdk', 'bin', 'tool');
    await mkdir(join(root, 'sdk', 'bin'), { recursive: true });
    await writeFile(tool, '#!/bin/sh\nexec env\n');
    await chmod(tool, 0o755);
    const seen = await stepEnv({ command: tool, sandbox: sandbox.forStep({ tool: 'flutter', fetch: false, cacheDir: join(root, '.cache') }) });
    expect(seen).toEqual(expect.arrayContaining(['NO_COLOR=1', 'FORCE_COLOR=0']));
  });
});
