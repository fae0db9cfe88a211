import { describe, expect, it } from 'vitest';
import { parseDiagnostics, sameDiagnostics } from '../../src/toolchain/diagnostics.js';

// Build-tool output as structured diagnostics: what a fix round sends back to the model
// and what Generation.diagnostics shows. Samples are the tools' real formats.

const ws = '/data/workspaces/p/g';

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
      { tool: 'tsc', severity: 'ERROR', path: null, line: null, column: null, code: 'TS5083', message: "Cannot read file '/data/workspaces/p/g/tsconfig.base.json'." },
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
      `${ws}/src/App.tsx:7:14: ERROR: Expected ";" but found "count"`,
      '    at failureErrorWithLog (node_modules/esbuild/lib/main.js:1477:15)',
    ];
    expect(parseDiagnostics('vite', output, ws)).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/App.tsx', line: 7, column: 14, code: null, message: 'Expected ";" but found "count"' },
    ]);
  });

  it("reads Rollup's message and its file line", () => {
    const output = [
      'error during build:',
      'src/main.tsx (3:7): "Board" is not exported by "src/Board.tsx", imported by "src/main.tsx".',
      `file: ${ws}/src/main.tsx:3:7`,
    ];
    expect(parseDiagnostics('vite', output, ws)).toEqual([
      { tool: 'vite', severity: 'ERROR', path: 'src/main.tsx', line: 3, column: 7, code: null, message: '"Board" is not exported by "src/Board.tsx", imported by "src/main.tsx".' },
    ]);
  });

  it('reads an unresolved import, and a bare message after "error during build:"', () => {
    expect(
      parseDiagnostics('vite', ['error during build:', `[vite]: Rollup failed to resolve import "lodash" from "${ws}/src/App.tsx".`], ws),
    ).toEqual([expect.objectContaining({ path: 'src/App.tsx', line: null, message: expect.stringContaining('failed to resolve import "lodash"') })]);
    expect(parseDiagnostics('vite', ['error during build:', 'Error: Could not resolve entry module "index.html".', '    at x (y.js:1:1)'], ws)).toEqual([
      expect.objectContaining({ path: null, message: 'Error: Could not resolve entry module "index.html".' }),
    ]);
  });
});

describe('flutter analyze', () => {
  it('reads --machine lines, making paths relative and leaving infos out', () => {
    const output = [
      'Analyzing g...',
      `INFO|LINT|AVOID_PRINT|${ws}/lib/main.dart|28|3|5|Don't invoke 'print' in production code.`,
      `WARNING|STATIC_WARNING|UNUSED_LOCAL_VARIABLE|${ws}/lib/src/util.dart|12|9|3|The value of the local variable 'foo' isn't used.`,
      `ERROR|COMPILE_TIME_ERROR|UNDEFINED_METHOD|${ws}/lib/main.dart|44|10|7|The method 'fetchz' isn't defined for the type 'Api'.`,
      `ERROR|SYNTACTIC_ERROR|EXPECTED_TOKEN|${ws}/lib/main.dart|5|1|1|Expected 'a \\| b' here.`,
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

describe('sameDiagnostics', () => {
  it('compares as sets: order does not matter, any field does', () => {
    const a = parseDiagnostics('tsc', ['a.ts(1,1): error TS1: one', 'b.ts(2,2): error TS2: two'], ws);
    expect(sameDiagnostics(a, [...a].reverse())).toBe(true);
    expect(sameDiagnostics(a, parseDiagnostics('tsc', ['a.ts(1,1): error TS1: one', 'b.ts(2,3): error TS2: two'], ws))).toBe(false);
    expect(sameDiagnostics(a, a.slice(1))).toBe(false);
  });
});
