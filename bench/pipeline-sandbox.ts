import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../src/observability/logger.js';
import { type BuildSandbox, createBuildSandbox, probeBwrap } from '../src/toolchain/sandbox.js';
import { buildEnv, runStep } from '../src/toolchain/step-runner.js';

// What the build sandbox adds to one build step: the same trivial step (a tool that
// prints a line and exits) run plainly and in bwrap (namespaces, mounts, cgroup, limit
// watch, last disk check), in a small workspace and in one holding 1,000 files, about
// what a WEB workspace's node_modules holds after installing react, vite and typescript. SANDBOX_BENCH_RUNS (default 40) of each; medians.
// Goal: at most 50 ms added per step.

const RUNS = Number(process.env.SANDBOX_BENCH_RUNS ?? 40);
const log = (line: string) => process.stdout.write(`${line}\n`);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

export default async function bench(): Promise<void> {
  const problem = await probeBwrap();
  if (problem) {
    log(`skipped: ${problem}`);
    return;
  }
  const root = await mkdtemp(join(tmpdir(), 'kiln-bench-sandbox-'));
  try {
    const tool = join(root, 'sdk', 'bin', 'tool');
    await mkdir(join(root, 'sdk', 'bin'), { recursive: true });
    await writeFile(tool, '#!/bin/sh\necho "Compiling lib/main.dart for the Web..."\n');
    await chmod(tool, 0o755);
    const sandbox = await createBuildSandbox(
      { kind: 'bwrap', allowUnsandboxed: false, limits: { memoryMb: 4096, maxProcesses: 512, workspaceMb: 4096, tmpMb: 512 } },
      createLogger('silent'),
    );
    log(`limits enforced by: ${sandbox.enforcement}`);

    const small = await workspace(root, 'small', 0);
    const large = await workspace(root, 'large', 1_000);
    const results: Record<string, number> = {};
    for (const [name, dir] of [['small', small], ['1,000 files', large]] as const) {
      const plain = await timeSteps(tool, dir, undefined);
      const boxed = await timeSteps(tool, dir, sandbox);
      results[name] = boxed - plain;
      log(`${name} workspace: none ${plain.toFixed(1)} ms, bwrap ${boxed.toFixed(1)} ms median per step (+${(boxed - plain).toFixed(1)} ms, ×${(boxed / plain).toFixed(2)})`);
    }
    const worst = Math.max(...Object.values(results));
    log(`sandbox added per build step: +${results.small!.toFixed(1)} ms (small workspace), +${results['1,000 files']!.toFixed(1)} ms (1,000 files); goal ≤ 50 ms: ${worst <= 50 ? 'met' : 'NOT met'}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function workspace(root: string, name: string, files: number): Promise<string> {
  const dir = join(root, 'workspaces', name, 'generation');
  await mkdir(join(dir, 'lib'), { recursive: true });
  await writeFile(join(dir, 'lib', 'main.dart'), 'void main() {}\n');
  for (let i = 0; i < files; i++) {
    const pkg = join(dir, 'node_modules', `pkg-${Math.floor(i / 50)}`);
    if (i % 50 === 0) await mkdir(pkg, { recursive: true });
    await writeFile(join(pkg, `file-${i}.js`), 'module.exports = 1;\n');
  }
  return dir;
}

async function timeSteps(tool: string, cwd: string, sandbox: BuildSandbox | undefined): Promise<number> {
  const durations: number[] = [];
  for (let run = 0; run < RUNS + 3; run++) {
    const started = performance.now();
    const result = await runStep({
      command: tool,
      args: [],
      cwd,
      env: buildEnv(),
      timeoutMs: 30_000,
      onLine: () => undefined,
      sandbox: sandbox?.forStep({ tool: 'flutter', fetch: false, cacheDir: join(cwd, '..', '.cache') }),
    });
    if (result.status !== 'SUCCEEDED') throw new Error(`the step failed: ${JSON.stringify(result)}`);
    if (run >= 3) durations.push(performance.now() - started); // the first runs warm caches
  }
  return median(durations);
}
