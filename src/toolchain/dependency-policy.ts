import { lstat, readFile, realpath, rm } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { BuildTool } from './build-steps.js';
import { truncateWithEllipsis } from './output-lines.js';

// The dependency fetch is the one step with the host's network (DESIGN "Running untrusted
// code"), so what it fetches must not be the project's choice of address: a dependency
// named by URL, git or path, a lock file's `resolved` URL or a planted `.npmrc` would
// make the server fetch from an internal address (PostgreSQL, cloud metadata, the API)
// and leave the answer in the workspace, where the next step can copy it into the
// preview. Before every fetch, files that steer the tools are removed and the manifest
// may only name packages of the registry the server chose.

/**
 * The fetch may not run: UNSAFE_OUTPUT for a dependency it may not get, BUILD_FAILED for a
 * manifest it cannot read (a mistake rather than an attack, as npm or pub would have said).
 */
export class DependencyPolicyError extends Error {
  override readonly name = 'DependencyPolicyError';
  constructor(
    message: string,
    readonly code: 'UNSAFE_OUTPUT' | 'BUILD_FAILED' = 'UNSAFE_OUTPUT',
  ) {
    super(message);
  }
}

/** Files in the workspace root that steer a fetch (registry, proxy, pinned URLs): never read by one. */
export const FETCH_STEERING_FILES = [
  '.npmrc',
  '.yarnrc',
  '.yarnrc.yml',
  '.pnpmfile.cjs',
  'package-lock.json',
  'npm-shrinkwrap.json',
  'yarn.lock',
  'pnpm-lock.yaml',
  'pubspec.lock',
  'pubspec_overrides.yaml',
];

const NPM_REGISTRY = 'https://registry.npmjs.org/';
const NPM_DEPENDENCY_FIELDS = ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies'];
// A semver range or a dist-tag: no ':' (URLs, git, file:), no '/' (paths, user/repo), no '#' or '@'.
const REGISTRY_RANGE = /^[A-Za-z0-9 .*^~<>=|+_-]*$/;
const PACKAGE_NAME = /^(@[a-z0-9~-][a-z0-9._~-]*\/)?[a-z0-9~-][a-z0-9._~-]*$/i;
const PUB_DEFAULT_HOSTS = new Set(['pub.dev', 'pub.dartlang.org']);
const PUB_DEPENDENCY_FIELDS = ['dependencies', 'dev_dependencies', 'dependency_overrides'];
const MAX_MANIFEST_BYTES = 1024 * 1024;
/** A value a refusal quotes: its first 120 characters and an ellipsis when it is longer than this. */
const MAX_SHOWN_CHARS = 121;

/**
 * What npm builds its tree from besides package.json: the packages already installed, whose
 * manifests (and `node_modules/.package-lock.json`) name dependencies the policy never saw,
 * by URL too. A build step runs project code that can write them.
 */
const NPM_INSTALLED = 'node_modules';

/**
 * Makes the workspace safe to fetch for: removes the files in FETCH_STEERING_FILES (an
 * earlier build step may have written them), and node_modules before npm, and checks the
 * manifest. Returns what it removed, for the build log; throws DependencyPolicyError for a
 * dependency it refuses.
 */
export async function prepareFetch(tool: BuildTool, workspace: string): Promise<string[]> {
  const removed: string[] = [];
  // rm removes a symbolic link, never what it points to, at the top as inside the tree.
  for (const file of tool === 'npm' ? [...FETCH_STEERING_FILES, NPM_INSTALLED] : FETCH_STEERING_FILES) {
    const path = join(workspace, file);
    if (!(await lstat(path).catch(() => undefined))) continue;
    await rm(path, { recursive: true, force: true });
    removed.push(file);
  }
  if (tool === 'npm') await checkPackageJson(workspace);
  else await checkPubspecs(await realpath(workspace));
  return removed;
}

/** Environment of the fetch, over the inherited one: the server's registry, whatever a project config says. */
export function fetchEnv(tool: BuildTool, source: NodeJS.ProcessEnv = process.env): Record<string, string> {
  if (tool !== 'npm') return {};
  const registry = source.npm_config_registry ?? source.NPM_CONFIG_REGISTRY ?? NPM_REGISTRY;
  // Environment outranks every .npmrc; both spellings, since npm reads either.
  return {
    npm_config_registry: registry,
    NPM_CONFIG_REGISTRY: registry,
    npm_config_allow_git: 'none',
    npm_config_package_lock: 'false',
  };
}

async function checkPackageJson(workspace: string): Promise<void> {
  const text = await readManifest(join(workspace, 'package.json'), 'package.json');
  if (text === undefined) throw new DependencyPolicyError('package.json is missing, so Kiln cannot check what the install would fetch.', 'BUILD_FAILED');
  let manifest: unknown;
  try {
    // npm strips a byte-order mark too.
    manifest = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw new DependencyPolicyError(`package.json is not valid JSON (${(error as Error).message}), so Kiln cannot check what the install would fetch.`, 'BUILD_FAILED');
  }
  if (!isObject(manifest)) throw new DependencyPolicyError('package.json is not a JSON object.', 'BUILD_FAILED');
  if (manifest.workspaces !== undefined) {
    throw new DependencyPolicyError('package.json declares "workspaces"; Kiln installs a single package.');
  }
  for (const field of NPM_DEPENDENCY_FIELDS) {
    const deps = manifest[field];
    if (deps === undefined) continue;
    if (!isObject(deps)) throw new DependencyPolicyError(`package.json "${field}" is not an object.`);
    for (const [name, spec] of Object.entries(deps)) {
      if (!PACKAGE_NAME.test(name)) throw refusal(`"${field}" names ${JSON.stringify(name)}, which is not a package name`);
      if (typeof spec !== 'string' || !isRegistrySpec(spec)) throw refusal(`"${field}" asks for "${name}" as ${show(spec)}`);
    }
  }
  if (manifest.overrides !== undefined) checkOverrides(manifest.overrides, 'overrides');
}

// `overrides` nests: a value is a spec (or `$name`, a root dependency's spec) or an object whose "." is one.
function checkOverrides(value: unknown, where: string): void {
  if (typeof value === 'string') {
    const rootReference = value.startsWith('$') && PACKAGE_NAME.test(value.slice(1));
    if (!rootReference && !isRegistrySpec(value)) throw refusal(`"${where}" overrides with ${show(value)}`);
    return;
  }
  if (!isObject(value)) throw refusal(`"${where}" is ${show(value)}`);
  for (const [key, inner] of Object.entries(value)) checkOverrides(inner, key === '.' ? where : key);
}

function isRegistrySpec(spec: string): boolean {
  const alias = /^npm:((?:@[^/@]+\/)?[^/@]+)(?:@(.*))?$/.exec(spec);
  if (alias) return PACKAGE_NAME.test(alias[1]!) && isRegistryRange(alias[2] ?? '');
  return isRegistryRange(spec);
}

function isRegistryRange(range: string): boolean {
  // npm takes a leading '.' as a folder and a name ending in .tgz/.tar as a tarball.
  return range.length <= 256 && REGISTRY_RANGE.test(range) && !/^\s*\./.test(range) && !/\.(tgz|tar|tar\.gz)\s*$/i.test(range);
}

function refusal(what: string): DependencyPolicyError {
  return new DependencyPolicyError(
    `package.json ${what}; Kiln installs dependencies only from the npm registry (a version range, a dist-tag or npm:name@range), never by URL, git, GitHub shorthand, file: or link:.`,
  );
}

/** pubspec.yaml, and that of each path dependency inside the workspace, may only use the SDK and pub.dev. */
async function checkPubspecs(workspace: string): Promise<void> {
  const pending = [workspace];
  const seen = new Set<string>();
  while (pending.length > 0) {
    const dir = pending.pop()!;
    if (seen.has(dir)) continue;
    seen.add(dir);
    const label = relative(workspace, join(dir, 'pubspec.yaml'));
    const text = await readManifest(join(dir, 'pubspec.yaml'), label);
    if (text === undefined) throw new DependencyPolicyError(`${label} is missing, so Kiln cannot check what \`flutter pub get\` would fetch.`, 'BUILD_FAILED');
    let pubspec: unknown;
    try {
      pubspec = parseYaml(text);
    } catch (error) {
      throw new DependencyPolicyError(`${label} is not valid YAML (${(error as Error).message.split('\n')[0]}), so Kiln cannot check what \`flutter pub get\` would fetch.`, 'BUILD_FAILED');
    }
    if (!isObject(pubspec)) throw new DependencyPolicyError(`${label} is not a YAML mapping.`, 'BUILD_FAILED');
    // A pub workspace resolves more packages than this one; not something Kiln builds.
    if (pubspec.workspace !== undefined || pubspec.resolution !== undefined) throw pubRefusal(label, 'declares a pub workspace');
    for (const field of PUB_DEPENDENCY_FIELDS) {
      const deps = pubspec[field];
      if (deps === undefined || deps === null) continue;
      if (!isObject(deps)) throw pubRefusal(label, `has a "${field}" that is not a mapping`);
      for (const [name, source] of Object.entries(deps)) {
        const path = checkPubSource(label, field, name, source);
        if (path !== undefined) pending.push(await insideWorkspace(workspace, dir, path, label, name));
      }
    }
  }
}

/** Refuses a source other than a version, `sdk: flutter` or pub.dev; returns a `path:` to check next. */
function checkPubSource(label: string, field: string, name: string, source: unknown): string | undefined {
  if (source === null || typeof source === 'string' || typeof source === 'number') return undefined; // a version constraint
  const where = `"${field}" asks for "${name}"`;
  if (!isObject(source)) throw pubRefusal(label, `${where} as ${show(source)}`);
  for (const [key, value] of Object.entries(source)) {
    if (key === 'version' && typeof value === 'string') continue;
    if (key === 'sdk' && value === 'flutter') continue;
    if (key === 'hosted' && isDefaultHosted(value)) continue;
    if (key === 'path' && typeof value === 'string' && Object.keys(source).length === 1) return value;
    throw pubRefusal(label, `${where} from ${key}: ${show(value)}`);
  }
  return undefined;
}

function isDefaultHosted(value: unknown): boolean {
  if (isObject(value)) {
    const { url, name, ...rest } = value;
    return Object.keys(rest).length === 0 && (name === undefined || typeof name === 'string') && (url === undefined || isDefaultHosted(url));
  }
  if (typeof value !== 'string') return false;
  try {
    const url = new URL(value);
    return url.protocol === 'https:' && PUB_DEFAULT_HOSTS.has(url.hostname) && url.port === '' && url.username === '' && url.pathname === '/';
  } catch {
    return false;
  }
}

async function insideWorkspace(workspace: string, dir: string, path: string, label: string, name: string): Promise<string> {
  const target = await realpath(resolve(dir, path)).catch(() => resolve(dir, path));
  if (target !== workspace && !target.startsWith(workspace + sep)) {
    throw pubRefusal(label, `asks for "${name}" from path: ${show(path)}, outside the project`);
  }
  return target;
}

function pubRefusal(label: string, what: string): DependencyPolicyError {
  return new DependencyPolicyError(
    `${label} ${what}; Kiln fetches Dart packages only from pub.dev (a version constraint), the Flutter SDK (sdk: flutter) or a path inside the project, never from git, another hosted server or a path outside it.`,
  );
}

/**
 * A manifest's text, undefined when there is none. A build step may have swapped it for a
 * symbolic link (to a secret of the host, which a parse error would quote) or a FIFO.
 */
async function readManifest(path: string, label: string): Promise<string | undefined> {
  const stats = await lstat(path).catch(() => undefined);
  if (!stats) return undefined;
  if (!stats.isFile()) throw new DependencyPolicyError(`${label} is not a regular file (a symbolic link?), so Kiln will not read it.`);
  if (stats.size > MAX_MANIFEST_BYTES) throw new DependencyPolicyError(`${label} is larger than 1 MB.`, 'BUILD_FAILED');
  return readFile(path, 'utf8');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return truncateWithEllipsis(text, MAX_SHOWN_CHARS);
}
