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
export const MAX_DIAGNOSTIC_MESSAGE_CHARS = 1000;

/**
 * `workspaceDirs`: the workspace as the server names it and as the tools print it, with
 * symlinks resolved (their working directory, and the sandbox's bind, are the real one).
 */
export function parseDiagnostics(format: DiagnosticFormat, lines: readonly string[], workspaceDirs: readonly string[]): Diagnostic[] {
  const found = parsers[format](lines.map(plainText), workspaceDirs);
  const scrub = workspaceScrubber(workspaceDirs);
  return found.map((d) => ({ ...d, message: truncateWithEllipsis(scrub(d.message), MAX_DIAGNOSTIC_MESSAGE_CHARS) }));
}

/**
 * What takes the server's path of the workspace out of a text: `<dir>/src/a.ts` reads `src/a.ts`,
 * `<dir>` alone reads `.`. Where the server keeps workspaces is none of the model's or the
 * members' business. Made once per build: it runs on every line of the log.
 */
export function workspaceScrubber(workspaceDirs: readonly string[]): (text: string) => string {
  // The longest first: one form may contain the other (/data/ws inside /mnt/data/ws).
  const dirs = [...workspaceDirs].filter(Boolean).sort((a, b) => b.length - a.length).map(escapeRegExp);
  if (dirs.length === 0) return (text) => text;
  const pattern = new RegExp(`(?:${dirs.join('|')})(/|(?![\\w.-]))`, 'g');
  return (text) => text.replace(pattern, (_, slash: string) => (slash ? '' : '.'));
}

/** `path:line:column` as far as the diagnostic knows them; null without a path. */
export function placeOf({ path, line, column }: Diagnostic): string | null {
  if (path === null) return null;
  return `${path}${line === null ? '' : `:${line}${column === null ? '' : `:${column}`}`}`;
}

/** The same failure in the same place, whatever the order: a fix round that changed nothing reports an equal set. */
export function sameDiagnostics(a: readonly Diagnostic[], b: readonly Diagnostic[]): boolean {
  if (a.length !== b.length) return false;
  const key = (d: Diagnostic) => JSON.stringify([d.tool, d.severity, d.path, d.line, d.column, d.code, d.message]);
  const left = a.map(key).sort();
  const right = b.map(key).sort();
  return left.every((value, i) => value === right[i]);
}

const parsers: Record<DiagnosticFormat, (lines: string[], workspaceDirs: readonly string[]) => Diagnostic[]> = {
  tsc: parseTsc,
  vite: parseVite,
  'flutter-analyze': parseFlutterAnalyze,
};

// ---------------------------------------------------------------- tsc --pretty false

// src/App.tsx(12,5): error TS2322: Type 'string' is not assignable to type 'number'.
const TSC_LOCATED = /^(.+?)\((\d+),(\d+)\): (error|warning|message) (TS\d+): (.*)$/;
// error TS5058: The specified path does not exist: 'tsconfig.json'.
const TSC_GLOBAL = /^(error|warning|message) (TS\d+): (.*)$/;

function parseTsc(lines: string[], workspaceDirs: readonly string[]): Diagnostic[] {
  const found: Diagnostic[] = [];
  for (const line of lines) {
    const located = TSC_LOCATED.exec(line);
    const global = located ? null : TSC_GLOBAL.exec(line);
    if (located) {
      const [, file, row, col, category, code, message] = located;
      found.push({
        tool: 'tsc',
        severity: tscSeverity(category!),
        path: workspacePath(file!, workspaceDirs),
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
// file: /abs/src/App.css:undefined:NaN                                (a location Vite does not know)
const ROLLUP_FILE = /^file: (.+?)(?::(\d+):(\d+)|:undefined:NaN)?$/;
// src/main.tsx (3:7): "foo" is not exported by "src/App.tsx"          (Rollup's message line)
const ROLLUP_LOCATED = /^(?:\[[\w:-]+\] )?(.+?) \((\d+):(\d+)\): (.*)$/;
// [vite]: Rollup failed to resolve import "x" from "/abs/src/App.tsx".
const VITE_RESOLVE = /Rollup failed to resolve import "([^"]+)" from "([^"]+)"/;
// [vite:css] , [vite:json] [plugin vite:json] , [vite]:                  (who reported it, not what went wrong)
const PLUGIN_PREFIX = /^(?:\[(?:vite(?::[\w:-]+)?|plugin [^\]]+)\]:? *)+/;
const STACK_FRAME = /^\s+at /;

function parseVite(lines: string[], workspaceDirs: readonly string[]): Diagnostic[] {
  const found: Diagnostic[] = [];
  // Vite 6 says "✗ Build failed in 416ms" first; the error itself follows this line.
  const start = lines.findIndex((line) => /^error during build:/i.test(line.trim()));
  const relevant = start >= 0 ? lines.slice(start + 1) : lines;
  let pending: Diagnostic | undefined;
  let unclaimedFile: RegExpExecArray | undefined;
  for (const line of relevant.map((text) => text.trim())) {
    const esbuild = ESBUILD_LOCATED.exec(line);
    if (esbuild) {
      const [, file, row, col, message] = esbuild;
      found.push(viteDiagnostic(workspacePath(file!, workspaceDirs), Number(row), Number(col), message!));
      continue;
    }
    const resolve = VITE_RESOLVE.exec(line);
    if (resolve) {
      found.push(viteDiagnostic(workspacePath(resolve[2]!, workspaceDirs), null, null, withoutPluginPrefix(line)));
      continue;
    }
    const file = ROLLUP_FILE.exec(line);
    if (file) {
      if (pending) locate(pending, file, workspaceDirs);
      else unclaimedFile ??= file;
      continue;
    }
    const located = start >= 0 ? ROLLUP_LOCATED.exec(withoutPluginPrefix(line)) : null;
    if (located) {
      const [, path, row, col, message] = located;
      pending = viteDiagnostic(workspacePath(path!, workspaceDirs), Number(row), Number(col), message!);
      found.push(pending);
    }
  }
  // Any other error (CSS, a missing entry, HTML, a plugin's): its first line, and the file a `file:` line names.
  if (found.length === 0 && start >= 0) {
    const message = relevant.find((line) => line.trim() && !STACK_FRAME.test(line) && !ROLLUP_FILE.test(line.trim()));
    if (message) {
      const diagnostic = viteDiagnostic(null, null, null, withoutPluginPrefix(message.trim()));
      if (unclaimedFile) locate(diagnostic, unclaimedFile, workspaceDirs);
      found.push(diagnostic);
    }
  }
  return found;
}

/** What Rollup's `file:` line adds: the path, and its line and column where Vite knows them. */
function locate(diagnostic: Diagnostic, file: RegExpExecArray, workspaceDirs: readonly string[]): void {
  diagnostic.path = workspacePath(file[1]!, workspaceDirs) ?? diagnostic.path;
  if (file[2]) {
    diagnostic.line = Number(file[2]);
    diagnostic.column = Number(file[3]);
  }
}

function withoutPluginPrefix(line: string): string {
  return line.replace(PLUGIN_PREFIX, '');
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
function parseFlutterAnalyze(lines: string[], workspaceDirs: readonly string[]): Diagnostic[] {
  const found: Diagnostic[] = [];
  for (const line of lines) {
    const diagnostic = machineLine(line, workspaceDirs) ?? humanLine(line, workspaceDirs);
    if (diagnostic && diagnostic.severity !== 'INFO') found.push(diagnostic);
  }
  return found;
}

function machineLine(line: string, workspaceDirs: readonly string[]): Diagnostic | undefined {
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
    path: workspacePath(file!, workspaceDirs),
    line: Number(row),
    column: Number(col),
    code: match[2]!.toLowerCase() || null,
    message: rest.join('|').replace(/\\\|/g, '|').replace(/\\\\/g, '\\'),
  };
}

function humanLine(line: string, workspaceDirs: readonly string[]): Diagnostic | undefined {
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
    path: workspacePath(file!, workspaceDirs),
    line: Number(row),
    column: Number(col),
    code,
    message: others.join(' - ').trim(),
  };
}

// ---------------------------------------------------------------- helpers

/** A tool's file name relative to the workspace (in either form), or null when it lies outside (an SDK file, say). */
function workspacePath(file: string, workspaceDirs: readonly string[]): string | null {
  const trimmed = file.trim();
  if (!trimmed) return null;
  const candidates = isAbsolute(trimmed) ? workspaceDirs.map((dir) => relative(dir, trimmed)) : [trimmed.replace(/^\.\//, '')];
  // `..` as a whole segment: `..helpers.ts` is a file of the workspace's root.
  const outside = (path: string) => path === '..' || path.startsWith('../') || path.startsWith(`..${sep}`) || isAbsolute(path);
  const inside = candidates.find((path) => path && !outside(path));
  return inside === undefined ? null : inside.split(sep).join('/');
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Without terminal colours and control characters (PostgreSQL text cannot hold NUL). */
function plainText(text: string): string {
  return text.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '').replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '');
}
