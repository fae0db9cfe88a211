import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseDiagnostics, sameDiagnostics } from '../../src/toolchain/diagnostics.js';
import { LineSplitter } from '../../src/toolchain/output-lines.js';

// Build-tool output as structured diagnostics: what a fix round sends back to the model
// and what Generation.diagnostics shows. Samples are the tools' real formats.

const workspace = '/data/workspaces/p/g';
const ws = [workspace];

/** A captured `vite build` (test/fixtures/vite6/), split as the step runner splits it. */
function viteOutput(name: string): string[] {
  const splitter = new LineSplitter(4000);
  const text = readFileSync(new URL(`../fixtures/vite6/${name}.out`, import.meta.url), 'utf8');
  return [...splitter.push(text), ...splitter.end()];
}
/** Where the captured app was built. */
const capturedApp = '/tmp/review-toolchain/app';

describe('tsc --pretty false', () => {
  it('reads located errors with their elaborations, and global ones', () => {
    const output = [
      "src/App.tsx(12,5): error TS2322: Type 'string' is not assignable to type 'number'.",
      "src/Board.tsx(3,10): error TS2345: Argument of type '{ id: string; }' is not assignable to parameter of type 'Cell'.",
      "  Property 'value' is missing in type '{ id: string; }' but required in type 'Cell'.",
      "error TS5083: Cannot read file '/data/workspaces/p/g/tsconfig.base.json'.",
      'npm error Lifecycle script failed',
    ];
    expect(parseDiagnostics('tsc', output, ws)).toEqual([
      { tool: 'tsc', severity: 'ERROR', path: 'src/App.tsx', line: 12, column: 5, code: 'TS2322', message: "Type 'string' is not assignable to type 'number'." },
      {
        tool: 'tsc',
        severity: 'ERROR',
        path: 'src/Board.tsx',
        line: 3,
        column: 10,
        code: 'TS2345',
        message:
          "Argument of type '{ id: string; }' is not assignable to parameter of type 'Cell'.\nProperty 'value' is missing in type '{ id: string; }' but required in type 'Cell'.",
      },
      // The server's path of the workspace is no business of the model's.
      { tool: 'tsc', severity: 'ERROR', path: null, line: null, column: null, code: 'TS5083', message: "Cannot read file 'tsconfig.base.json'." },
    ]);
  });

  it('finds nothing in output it does not understand', () => {
    expect(parseDiagnostics('tsc', ['Killed', 'npm error code 137'], ws)).toEqual([]);
  });

  it('keeps at most 1,000 characters of a message, ending a cut one in an ellipsis', () => {
    const [kept, cut] = parseDiagnostics('tsc', [`src/a.ts(1,1): error TS1: ${'k'.repeat(1000)}`, `src/b.ts(1,1): error TS1: ${'c'.repeat(1001)}`], ws);
    expect(kept!.message).toBe('k'.repeat(1000));
    expect(cut!.message).toBe(`${'c'.repeat(999)}…`);
  });
});

describe('vite build', () => {
  it('reads an esbuild error with an absolute path', () => {
    const output = [
      'vite v6.3.5 building for production...',
      'transforming...',
      '✗ Build failed in 42ms',
      'error during build:',
      `[vite:esbuild] Transform failed with 1 error:`,
      `${workspace}/src/App.tsx:7:14: ERROR: Expected ";" but found "count"`,
      '    at failureErrorWithLog (node_modules/esbuild/lib/main.js:1477:15)',
    ];
    expect(parseDiagnostics('vite', output, ws)).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/App.tsx', line: 7, column: 14, code: null, message: 'Expected ";" but found "count"' },
    ]);
  });

  it("reads Rollup's message and its file line", () => {
    const output = [
      '✗ Build failed in 42ms',
      'error during build:',
      'src/main.tsx (3:7): "Board" is not exported by "src/Board.tsx", imported by "src/main.tsx".',
      `file: ${workspace}/src/main.tsx:3:7`,
    ];
    expect(parseDiagnostics('vite', output, ws)).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/main.tsx', line: 3, column: 7, code: null, message: '"Board" is not exported by "src/Board.tsx", imported by "src/main.tsx".' },
    ]);
  });

  it('reads an unresolved import, and a bare message after "error during build:"', () => {
    expect(
      parseDiagnostics('vite', ['error during build:', `[vite]: Rollup failed to resolve import "lodash" from "${workspace}/src/App.tsx".`], ws),
    ).toEqual([expect.objectContaining({ path: 'src/App.tsx', line: null, message: expect.stringContaining('failed to resolve import "lodash"') })]);
    expect(parseDiagnostics('vite', ['✗ Build failed in 9ms', 'error during build:', 'Error: Could not resolve entry module "index.html".', '    at x (y.js:1:1)'], ws)).toEqual([
      expect.objectContaining({ path: null, message: 'Error: Could not resolve entry module "index.html".' }),
    ]);
  });
});

describe("Vite 6's real output (✗ Build failed, then error during build:)", () => {
  it('reads a CSS error as its message and the file Vite names, without a line it does not know', () => {
    expect(parseDiagnostics('vite', viteOutput('cssimport'), [capturedApp])).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/App.css', line: null, column: null, code: null, message: "[postcss] ENOENT: no such file or directory, open './missing.css'" },
    ]);
  });

  it('reads a plugin error with its location, without the plugin prefixes', () => {
    expect(parseDiagnostics('vite', viteOutput('badjson'), [capturedApp])).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/data.json', line: 1, column: 9, code: null, message: 'Failed to parse JSON file, invalid JSON syntax found at position 9' },
    ]);
  });

  it("reads esbuild's and Rollup's errors, and an unresolved import without the server's path in its message", () => {
    expect(parseDiagnostics('vite', viteOutput('esbuild'), [capturedApp])).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/App.tsx', line: 2, column: 52, code: null, message: 'Expected ";" but found "count"' },
    ]);
    expect(parseDiagnostics('vite', viteOutput('notexported'), [capturedApp])).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/App.tsx', line: 2, column: 9, code: null, message: '"Missing" is not exported by "src/Other.ts", imported by "src/App.tsx".' },
    ]);
    expect(parseDiagnostics('vite', viteOutput('unresolved'), [capturedApp])).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/App.tsx', line: null, column: null, code: null, message: 'Rollup failed to resolve import "lodash" from "src/App.tsx".' },
    ]);
  });

  it('places a path Vite prints resolved under a workspace the server names through a symlink', () => {
    // The server's DATA_DIR is a symlink to where the app really is; Vite prints the real path.
    const named = '/srv/kiln-data/workspaces/p/g';
    expect(parseDiagnostics('vite', viteOutput('esbuild'), [named, capturedApp])).toEqual([
      expect.objectContaining({ path: 'src/App.tsx', line: 2, column: 52 }),
    ]);
    expect(parseDiagnostics('flutter-analyze', [`ERROR|COMPILE_TIME_ERROR|UNDEFINED_IDENTIFIER|${capturedApp}/lib/main.dart|3|5|5|Undefined name 'runAp'.`], [named, capturedApp])).toEqual([
      expect.objectContaining({ path: 'lib/main.dart', line: 3, column: 5 }),
    ]);
  });
});

describe('flutter analyze', () => {
  it('reads --machine lines, making paths relative and leaving infos out', () => {
    const output = [
      'Analyzing g...',
      `INFO|LINT|AVOID_PRINT|${workspace}/lib/main.dart|28|3|5|Don't invoke 'print' in production code.`,
      `WARNING|STATIC_WARNING|UNUSED_LOCAL_VARIABLE|${workspace}/lib/src/util.dart|12|9|3|The value of the local variable 'foo' isn't used.`,
      `ERROR|COMPILE_TIME_ERROR|UNDEFINED_METHOD|${workspace}/lib/main.dart|44|10|7|The method 'fetchz' isn't defined for the type 'Api'.`,
      `ERROR|SYNTACTIC_ERROR|EXPECTED_TOKEN|${workspace}/lib/main.dart|5|1|1|Expected 'a \\| b' here.`,
      `ERROR|COMPILE_TIME_ERROR|URI_DOES_NOT_EXIST|/opt/flutter/packages/x.dart|1|8|22|Target of URI doesn't exist.`,
    ];
    expect(parseDiagnostics('flutter-analyze', output, ws)).toEqual([
      { tool: 'flutter', severity: 'WARNING', path: 'lib/src/util.dart', line: 12, column: 9, code: 'unused_local_variable', message: "The value of the local variable 'foo' isn't used." },
      { tool: 'flutter', severity: 'ERROR', path: 'lib/main.dart', line: 44, column: 10, code: 'undefined_method', message: "The method 'fetchz' isn't defined for the type 'Api'." },
      { tool: 'flutter', severity: 'ERROR', path: 'lib/main.dart', line: 5, column: 1, code: 'expected_token', message: "Expected 'a | b' here." },
      { tool: 'flutter', severity: 'ERROR', path: null, line: 1, column: 8, code: 'uri_does_not_exist', message: "Target of URI doesn't exist." },
    ]);
  });

  it('reads the human formats of flutter and dart analyze', () => {
    const output = [
      "  error • Undefined name 'runAp' • lib/main.dart:3:5 • undefined_identifier",
      "  error - lib/main.dart:3:5 - Undefined name 'runAp'. - undefined_identifier",
      "   info • Use 'const' with the constructor • lib/main.dart:9:12 • prefer_const_constructors",
      '1 issue found. (ran in 0.8s)',
    ];
    expect(parseDiagnostics('flutter-analyze', output, ws)).toEqual([
      { tool: 'flutter', severity: 'ERROR', path: 'lib/main.dart', line: 3, column: 5, code: 'undefined_identifier', message: "Undefined name 'runAp'" },
      { tool: 'flutter', severity: 'ERROR', path: 'lib/main.dart', line: 3, column: 5, code: 'undefined_identifier', message: "Undefined name 'runAp'." },
    ]);
  });
});

describe('paths', () => {
  it('places a root file whose name starts with two dots in the workspace, and nothing above it', () => {
    const tsc = parseDiagnostics('tsc', ['..helpers.ts(1,1): error TS2304: Cannot find name x.', '../outside.ts(1,1): error TS2304: Cannot find name y.'], ws);
    expect(tsc.map((d) => d.path)).toEqual(['..helpers.ts', null]);
    const flutter = parseDiagnostics(
      'flutter-analyze',
      [
        `ERROR|COMPILE_TIME_ERROR|UNDEFINED_IDENTIFIER|${workspace}/..helpers.dart|3|4|1|Undefined name 'x'.`,
        `ERROR|COMPILE_TIME_ERROR|UNDEFINED_IDENTIFIER|${workspace}/../g2/lib/main.dart|3|4|1|Undefined name 'y'.`,
      ],
      ws,
    );
    expect(flutter.map((d) => d.path)).toEqual(['..helpers.dart', null]);
  });
});

describe('sameDiagnostics', () => {
  it('compares as sets: order does not matter, any field does', () => {
    const a = parseDiagnostics('tsc', ['a.ts(1,1): error TS1: one', 'b.ts(2,2): error TS2: two'], ws);
    expect(sameDiagnostics(a, [...a].reverse())).toBe(true);
    expect(sameDiagnostics(a, parseDiagnostics('tsc', ['a.ts(1,1): error TS1: one', 'b.ts(2,3): error TS2: two'], ws))).toBe(false);
    expect(sameDiagnostics(a, a.slice(1))).toBe(false);
  });
});
