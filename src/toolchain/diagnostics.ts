import { isAbsolute, relative, sep } from 'node:path';
import { truncateWithEllipsis } from './output-lines.js';

// Build-tool failures as structured diagnostics (DESIGN "Self-healing builds"): what a
// fix round hands back to the model and what Generation.diagnostics shows. Each format
// is a pure function of the step's output lines; an output none of them understands
// yields nothing, and the step fails as before with its tail in the message.

export type DiagnosticSeverity = 'ERROR' | 'WARNING' | 'INFO';

export interface Diagnostic {
  /** The tool that reported it: tsc, vite, flutter. */
  tool: string;
  severity: DiagnosticSeverity;
  /** Relative to the workspace; null when the tool named no file (or one outside it). */
  path: string | null;
  line: number | null;
  column: number | null;
  code: string | null;
  message: string;
}

/** Which parser reads a step's output. */
export type DiagnosticFormat = 'tsc' | 'vite' | 'flutter-analyze';

/** One message at most this long, so a runaway line cannot fill a prompt. */
const MAX_MESSAGE_CHARS = 1000;

export function parseDiagnostics(format: DiagnosticFormat, lines: readonly string[], workspaceDir: string): Diagnostic[] {
  const found = parsers[format](lines.map(plainText), workspaceDir);
  return found.map((d) => ({ ...d, message: truncateWithEllipsis(d.message, MAX_MESSAGE_CHARS) }));
}

/** The same failure in the same place, whatever the order: a fix round that changed nothing reports an equal set. */
export function sameDiagnostics(a: readonly Diagnostic[], b: readonly Diagnostic[]): boolean {
  if (a.length !== b.length) return false;
  const key = (d: Diagnostic) => JSON.stringify([d.tool, d.severity, d.path, d.line, d.column, d.code, d.message]);
  const left = a.map(key).sort();
  const right = b.map(key).sort();
  return left.every((value, i) => value === right[i]);
}

const parsers: Record<DiagnosticFormat, (lines: string[], workspaceDir: string) => Diagnostic[]> = {
  tsc: parseTsc,
  vite: parseVite,
  'flutter-analyze': parseFlutterAnalyze,
};

// ---------------------------------------------------------------- tsc --pretty false

// src/App.tsx(12,5): error TS2322: Type 'string' is not assignable to type 'number'.
const TSC_LOCATED = /^(.+?)\((\d+),(\d+)\): (error|warning|message) (TS\d+): (.*)$/;
// error TS5058: The specified path does not exist: 'tsconfig.json'.
const TSC_GLOBAL = /^(error|warning|message) (TS\d+): (.*)$/;

function parseTsc(lines: string[], workspaceDir: string): Diagnostic[] {
  const found: Diagnostic[] = [];
  for (const line of lines) {
    const located = TSC_LOCATED.exec(line);
    const global = located ? null : TSC_GLOBAL.exec(line);
    if (located) {
      const [, file, row, col, category, code, message] = located;
      found.push({
        tool: 'tsc',
        severity: tscSeverity(category!),
        path: workspacePath(file!, workspaceDir),
        line: Number(row),
        column: Number(col),
        code: code!,
        message: message!,
      });
    } else if (global) {
      found.push({ tool: 'tsc', severity: tscSeverity(global[1]!), path: null, line: null, column: null, code: global[2]!, message: global[3]! });
    } else if (/^\s+\S/.test(line) && found.length > 0) {
      // An elaboration ("  Type 'x' is not assignable to …") belongs to the diagnostic above.
      found.at(-1)!.message += `\n${line.trim()}`;
    }
  }
  return found;
}

function tscSeverity(category: string): DiagnosticSeverity {
  return category === 'error' ? 'ERROR' : category === 'warning' ? 'WARNING' : 'INFO';
}

// ---------------------------------------------------------------- vite build (Rollup, esbuild)

// /abs/src/App.tsx:3:10: ERROR: Expected ";" but found "x"          (esbuild, through vite:esbuild)
const ESBUILD_LOCATED = /^(?:✘ \[ERROR\] )?(.+?):(\d+):(\d+): ERROR: (.*)$/;
// file: /abs/src/main.tsx:3:7                                         (Rollup's location line)
const ROLLUP_FILE = /^file: (.+?)(?::(\d+):(\d+))?$/;
// src/main.tsx (3:7): "foo" is not exported by "src/App.tsx"          (Rollup's message line)
const ROLLUP_LOCATED = /^(?:\[[\w:-]+\] )?(.+?) \((\d+):(\d+)\): (.*)$/;
// [vite]: Rollup failed to resolve import "x" from "/abs/src/App.tsx".
const VITE_RESOLVE = /Rollup failed to resolve import "([^"]+)" from "([^"]+)"/;

function parseVite(lines: string[], workspaceDir: string): Diagnostic[] {
  const found: Diagnostic[] = [];
  const start = lines.findIndex((line) => /error during build:|Build failed/i.test(line));
  const relevant = start >= 0 ? lines.slice(start) : lines;
  let pending: Diagnostic | undefined;
  for (const line of relevant) {
    const esbuild = ESBUILD_LOCATED.exec(line.trim());
    if (esbuild) {
      const [, file, row, col, message] = esbuild;
      found.push(viteDiagnostic(workspacePath(file!, workspaceDir), Number(row), Number(col), message!));
      continue;
    }
    const resolve = VITE_RESOLVE.exec(line);
    if (resolve) {
      found.push(viteDiagnostic(workspacePath(resolve[2]!, workspaceDir), null, null, line.replace(/^\[vite\]:\s*/, '').trim()));
      continue;
    }
    const file = ROLLUP_FILE.exec(line.trim());
    if (file && pending) {
      pending.path = workspacePath(file[1]!, workspaceDir) ?? pending.path;
      if (file[2]) {
        pending.line = Number(file[2]);
        pending.column = Number(file[3]);
      }
      continue;
    }
    const located = ROLLUP_LOCATED.exec(line.trim());
    if (located && start >= 0) {
      const [, path, row, col, message] = located;
      pending = viteDiagnostic(workspacePath(path!, workspaceDir), Number(row), Number(col), message!);
      found.push(pending);
    }
  }
  // "error during build:" followed by a plain message: keep it, without a location.
  if (found.length === 0 && start >= 0) {
    const message = relevant.slice(1).find((line) => line.trim() && !/^\s+at /.test(line));
    if (message) found.push(viteDiagnostic(null, null, null, message.trim()));
  }
  return found;
}

function viteDiagnostic(path: string | null, line: number | null, column: number | null, message: string): Diagnostic {
  return { tool: 'vite', severity: 'ERROR', path, line, column, code: null, message };
}

// ---------------------------------------------------------------- flutter analyze

// ERROR|COMPILE_TIME_ERROR|UNDEFINED_IDENTIFIER|/abs/lib/main.dart|10|5|3|Undefined name 'foo'.
const MACHINE = /^(ERROR|WARNING|INFO)\|[A-Z_]*\|([A-Za-z0-9_]*)\|(.*)$/;
// "  error • Undefined name 'foo' • lib/main.dart:10:5 • undefined_identifier" (flutter),
// "  error - lib/main.dart:10:5 - Undefined name 'foo'. - undefined_identifier" (dart analyze).
const HUMAN = /^\s*(error|warning|info|hint|lint) (?:•|-) (.*)$/;
const LOCATION = /^(.+?):(\d+):(\d+)$/;

/**
 * `flutter analyze --machine` lines, and the human format as a fallback (the flag
 * selects it only in some Flutter versions). Infos are advice: `--no-fatal-infos`
 * leaves them out of the failure, so only errors and warnings are reported.
 */
function parseFlutterAnalyze(lines: string[], workspaceDir: string): Diagnostic[] {
  const found: Diagnostic[] = [];
  for (const line of lines) {
    const diagnostic = machineLine(line, workspaceDir) ?? humanLine(line, workspaceDir);
    if (diagnostic && diagnostic.severity !== 'INFO') found.push(diagnostic);
  }
  return found;
}

function machineLine(line: string, workspaceDir: string): Diagnostic | undefined {
  const match = MACHINE.exec(line.trim());
  if (!match) return undefined;
  // file|line|col|length|message, where a `|` inside the message is escaped as `\|`.
  const fields = match[3]!.split(/(?<!\\)\|/);
  if (fields.length < 5) return undefined;
  const [file, row, col, , ...rest] = fields;
  if (!/^\d+$/.test(row!) || !/^\d+$/.test(col!)) return undefined;
  return {
    tool: 'flutter',
    severity: match[1] as DiagnosticSeverity,
    path: workspacePath(file!, workspaceDir),
    line: Number(row),
    column: Number(col),
    code: match[2]!.toLowerCase() || null,
    message: rest.join('|').replace(/\\\|/g, '|').replace(/\\\\/g, '\\'),
  };
}

function humanLine(line: string, workspaceDir: string): Diagnostic | undefined {
  const match = HUMAN.exec(line);
  if (!match) return undefined;
  const parts = match[2]!.split(/ (?:•|-) /);
  const at = parts.findIndex((part) => LOCATION.test(part.trim()));
  if (at < 0 || parts.length < 2) return undefined;
  const [, file, row, col] = LOCATION.exec(parts[at]!.trim())!;
  const others = parts.filter((_, i) => i !== at);
  const code = others.length > 1 && /^[a-z0-9_]+$/.test(others.at(-1)!.trim()) ? others.pop()!.trim() : null;
  const severity = match[1] === 'error' ? 'ERROR' : match[1] === 'warning' ? 'WARNING' : 'INFO';
  return {
    tool: 'flutter',
    severity,
    path: workspacePath(file!, workspaceDir),
    line: Number(row),
    column: Number(col),
    code,
    message: others.join(' - ').trim(),
  };
}

// ---------------------------------------------------------------- helpers

/** A tool's file name relative to the workspace, or null when it lies outside (an SDK file, say). */
function workspacePath(file: string, workspaceDir: string): string | null {
  const trimmed = file.trim();
  if (!trimmed) return null;
  const inside = isAbsolute(trimmed) ? relative(workspaceDir, trimmed) : trimmed.replace(/^\.\//, '');
  if (!inside || inside.startsWith('..') || isAbsolute(inside)) return null;
  return inside.split(sep).join('/');
}

/** Without terminal colours and control characters (PostgreSQL text cannot hold NUL). */
function plainText(text: string): string {
  return text.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '').replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '');
}
