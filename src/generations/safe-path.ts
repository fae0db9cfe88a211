import { RunError } from '../errors.js';

export const MAX_PATH_LENGTH = 255;
export const MAX_PATH_DEPTH = 16;

// A closed ASCII set: anything else (look-alikes, RTL overrides, fullwidth slashes) is refused.
const ALLOWED_PATH = /^[A-Za-z0-9._\-/@+]+$/;
// Files the build tools read on their own (registry, scripts, tokens, Vite's environment): generated
// code must not steer them. `.env.example` is documentation that no tool reads.
const TOOL_STEERING = /^(\.npmrc|\.yarnrc.*|\.pnpmfile\.cjs|\.env(?!\.example$).*)$/;
// Names Windows keeps for devices, with any extension (`con.dart`): no folder there can hold such a file,
// so an archive of the version would not unpack.
const WINDOWS_DEVICE = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;
// Lock files pin download URLs and pubspec_overrides.yaml swaps dependency sources: the fetch reads
// neither (dependency-policy.ts removes them), so the model has no reason to write one.
const FETCH_PINNING = /^(package-lock\.json|npm-shrinkwrap\.json|yarn\.lock|pnpm-lock\.yaml|pubspec\.lock|pubspec_overrides\.yaml)$/;

/** The model's output names a path or size the workspace must not accept; ends the run as UNSAFE_OUTPUT. */
export class UnsafeOutputError extends RunError {
  override readonly name = 'UnsafeOutputError';
  readonly code = 'UNSAFE_OUTPUT';
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`The model's output is unsafe: ${describePath(path)} ${reason}`);
  }
}

/** Quotes a path for a message, with invisible or non-ASCII characters escaped so they show. */
export function describePath(path: string): string {
  const shown = path.length > 100 ? `${path.slice(0, 100)}...` : path;
  const escaped = shown.replace(/[^\x20-\x7e]|\\/gu, (ch) =>
    ch === '\\' ? '\\\\' : `\\u{${ch.codePointAt(0)!.toString(16)}}`,
  );
  return `"${escaped}"`;
}

/** Throws UnsafeOutputError unless `path` is a plain relative path that stays inside its directory. */
export function assertSafeRelativePath(path: string): void {
  const reason = unsafeReason(path);
  if (reason) throw new UnsafeOutputError(path, reason);
}

function unsafeReason(path: string): string | undefined {
  if (path === '') return 'is an empty path';
  if (path.length > MAX_PATH_LENGTH) return `is longer than ${MAX_PATH_LENGTH} characters`;
  if (/[\u0000-\u001f\u007f]/u.test(path)) return 'contains a control character';
  if (path.includes('\\')) return 'contains a backslash';
  if (/^[A-Za-z]:/u.test(path)) return 'starts with a drive letter';
  if (path.startsWith('/')) return 'is an absolute path';
  if (!ALLOWED_PATH.test(path)) return 'contains a character other than letters, digits and ._-/@+';
  const segments = path.split('/');
  if (segments.includes('..')) return 'has a ".." segment';
  if (segments.some((segment) => segment === '' || segment === '.')) return 'has an empty or "." segment';
  if (segments.length > MAX_PATH_DEPTH) return `is deeper than ${MAX_PATH_DEPTH} levels`;
  // Windows drops a name's trailing dots: `main.dart.` would unpack over `main.dart`.
  if (segments.some((segment) => segment.endsWith('.'))) return 'has a name ending in "." (Windows drops the dot)';
  if (segments.some((segment) => WINDOWS_DEVICE.test(segment))) return 'is a name Windows keeps for a device (CON, PRN, AUX, NUL, COM0-9, LPT0-9)';
  if (segments.some((segment) => TOOL_STEERING.test(segment))) return 'is a configuration file that steers the build tools (.npmrc, .yarnrc, .pnpmfile.cjs, .env)';
  if (segments.some((segment) => FETCH_PINNING.test(segment))) {
    return 'is a lock file or dependency override that would steer the dependency fetch (Kiln resolves dependencies from package.json or pubspec.yaml itself)';
  }
  return undefined;
}
