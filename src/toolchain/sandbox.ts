import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { access, lchown, lstat, mkdir, mkdtemp, open, readFile, readlink, realpath, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, basename, isAbsolute, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ConfigError, DEFAULT_SANDBOX_UID } from '../config.js';
import type { Logger } from '../observability/logger.js';
import { readProcStat } from '../proc-stat.js';
import type { BuildTool } from './build-steps.js';
import { type CgroupLayout, createStepCgroup, findCgroups, type StepCgroup } from './cgroups.js';
import { buildStepFilter } from './seccomp.js';
import { type LimitWatch, type StepLimits, watchLimits } from './step-limits.js';
import { runProcess } from './spawner.js';
import { REGISTRY_ENV } from './step-runner.js';
import { giveOpened, giveTree, type Owner } from '../workspace/ownership.js';

// Every step that can run project code runs under bubblewrap (DESIGN "Running untrusted
// code"): its own user, pid, ipc, uts, cgroup and network namespaces, an unprivileged uid
// (on the host too: a root server's steps run as BUILD_SANDBOX_UID, not as root, wherever
// the switch works; where it does not, a warning at start and /ready's hostUid 0 say so),
// read-only system and toolchain folders, the workspace as the only writable path, a
// private /tmp and HOME, an allowlisted environment, and limits on processes, memory and
// disk. Only the dependency fetch gets the network and the project's caches (writable);
// the other steps see the pub cache read-only and the npm cache not at all. The server's
// folders (DATA_DIR, workspaces, its own) are hidden even where a read-only folder holds them.

export type SandboxKind = 'bwrap' | 'none';

export interface SandboxSettings {
  /** Undefined: bwrap when it works here, else none. */
  kind?: SandboxKind;
  /** False in production unless ALLOW_UNSANDBOXED_BUILDS=true. */
  allowUnsandboxed: boolean;
  limits: StepLimits;
  /**
   * Folders no step may see, by the setting that names them (DATA_DIR, WORKSPACES_DIR); the
   * server's own folder (its working directory, with .env) always is one. Hidden by an empty
   * mount where a read-only system folder holds them (Kiln installed in /usr/src/app).
   */
  hiddenDirs?: Readonly<Record<string, string>>;
  /**
   * The host user a root server's steps run as (uid and gid alike); `explicit` when the
   * operator named it (BUILD_SANDBOX_UID), and then a root server that cannot switch to it
   * refuses to start. Unset: DEFAULT_SANDBOX_UID, not explicit.
   */
  stepUser?: { uid: number; explicit: boolean };
}

export interface StepAccess {
  tool: BuildTool;
  /** The dependency fetch: the network and the writable caches, and no project code. */
  fetch: boolean;
  /** The project's own tool caches (npm, pub); never shared with another project. */
  cacheDir: string;
}

export interface BuildSandbox {
  readonly kind: SandboxKind;
  /** How the kernel bounds a step's processes and memory, for /ready and the start-up log. */
  readonly enforcement: 'cgroup v1' | 'cgroup v2' | 'rlimits and polling' | 'none';
  /** The host uid a step's processes and files are, for /ready and the start-up log. */
  readonly hostUid?: number;
  /**
   * The host user the steps run as when it is not the server's own (a root server): what the
   * server writes for them (a workspace, createWorkspace's `owner`) goes to this user.
   */
  readonly stepOwner?: Owner;
  /** The sandbox of one step; undefined when builds run unsandboxed. */
  forStep(access: StepAccess): StepSandbox | undefined;
}

export interface StepCommand {
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
}

export interface StepSandbox {
  /** The command wrapped in the sandbox, or why the tool cannot run. */
  enter(step: StepCommand): Promise<Jail | { missing: 'ENOENT' | 'EACCES' }>;
}

/** One sandboxed run: spawn `command args` with `env`, and a readable pipe as fd 3. */
export interface Jail {
  command: string;
  args: string[];
  env: Record<string, string>;
  /** Starts enforcing the limits; `onExceeded` is told once, with the message for the log. */
  started(pid: number, info: Readable, onExceeded: (message: string) => void): void;
  /** After the step: waits until nothing of it runs, releases it, and returns a limit it passed. */
  release(): Promise<string | undefined>;
  /**
   * Whether the tool itself ran: false when the sandbox failed before it (the wrapper shell's
   * exit 125, bwrap's own exit 1), whatever the exit code says. Known once the sandbox is gone.
   */
  toolStarted(): Promise<boolean>;
}

const BWRAP = '/usr/bin/bwrap';
/** RLIMIT_NOFILE of every process of a step, soft and hard. */
export const STEP_MAX_OPEN_FILES = 4096;
const PRLIMIT = '/usr/bin/prlimit';
const NICE = '/usr/bin/nice';
/**
 * Every process of a step runs this much nicer than the server: a build that spins on every
 * core leaves the API its turns (without CAP_SYS_NICE a step cannot undo it).
 */
export const STEP_NICENESS = 10;
/** The steps' uid inside the sandbox, whatever it is on the host. */
const SANDBOX_UID = '1000';
const UNSHARE = '/usr/bin/unshare';
const SETPRIV = '/usr/bin/setpriv';
const SLEEP = '/usr/bin/sleep';
const DD = '/usr/bin/dd';
/** The wrapper shell of a root server's steps where it is installed: its printf writes a map in one write(2). */
const DASH = '/bin/dash';
const HOME = '/tmp/home';
/** What the launcher writes on STARTED_FD as the tool starts: a step without it failed in its sandbox's set-up. */
const TOOL_STARTS = 'kiln-build-tool-starts';
const STARTED_FD = 6;
/** Far more than bwrap's report and the launcher's line: the info pipe is read no further. */
const MAX_INFO_LENGTH = 64 * 1024;
/** npm's cache in the steps that run project code: their own, in the private /tmp. */
const PRIVATE_NPM_CACHE = '/tmp/npm-cache';
/** Kiln's own files (sources or dist/, node_modules, .env), wherever it was started from. */
const KILN_FOLDER = fileURLToPath(new URL('../..', import.meta.url));
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];
// What the dynamic loader and tools read from /etc; never the host's users, keys or config.
const ETC_ALWAYS = ['/etc/ld.so.cache', '/etc/ld.so.conf', '/etc/ld.so.conf.d', '/etc/alternatives', '/etc/localtime', '/etc/hosts', '/etc/nsswitch.conf'];
const ETC_FETCH = ['/etc/resolv.conf', '/etc/ssl', '/etc/ca-certificates', '/etc/ca-certificates.conf', '/etc/pki', '/etc/gai.conf'];
const ENV_ALWAYS = ['LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'CI', 'NO_COLOR', 'FORCE_COLOR'];
const CA_PATH_VARS = ['NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR'];
/** Before bwrap: the seccomp filter ("$0") opened as fd 4 (`--seccomp 4`). */
const OPEN_FILTER = 'exec 4<"$0" || exit 125; ';
/** Joins the step's cgroups before bwrap starts, so every process it makes is counted. */
const JOIN_CGROUP = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; ';
/**
 * A root server's steps: a user namespace made for this step alone, where uid 0 is the host's
 * root and 1000 the steps' host user ("$1", gid "$2"), opened as fd 5 for `bwrap --userns 5`.
 * bwrap sets the sandbox up as that root (it binds folders only root may reach, as it always
 * did), then setpriv drops to 1000 (userSwitch). `unshare` holds the namespace until the maps are
 * written (each in one write(2), which the kernel requires: dash's printf, which writes its output
 * at once, or where there is no dash, dd of a whole block; bash's printf writes line by line) and fd 5
 * is open. Fails closed (exit 125, bwrap never runs): a namespace that is not new (the holder
 * could not make one, or has gone), or whose maps someone wrote before us, is never used. (dash
 * reaps a holder that died at once, so its pid could in theory be another's by the time the maps
 * are written: the kernel takes a map once, and the writes fail or the fd is checked below.)
 * The holder (`holder`, namespaceHolder's), root's, is killed and reaped once fd 5 is open, and
 * when a step fails before that; one that outlives a shell killed meanwhile (a probe's timeout)
 * gets its parent-death signal where setpriv has one. A step's `rlimits` (prlimit's options) are
 * the wrapper's own from then on, bwrap's and all it starts: set while the holder starts, they
 * cost the step no program of its own in the sandbox.
 */
function userNamespace({ holder, shell }: NamespaceTools, rlimits: readonly string[]): string {
  // Quiet: a holder already gone would put kill's complaint after the message that says why.
  const fail = '{ kill -KILL $h 2>/dev/null; wait $h 2>/dev/null; exit 125; }';
  const map = (id: string) => `0 0 1\n${SANDBOX_UID} ${id} 1\n`;
  // dash's printf needs no process at all. dd: both at once (`wait` gives the first one's status),
  // each fed by a here-document, which the shell supplies itself (no printf process).
  const writeMaps =
    shell === DASH
      ? [
          ['uid_map', '$1'],
          ['gid_map', '$2'],
        ].map(([file, id]) => `printf '0 0 1\\n${SANDBOX_UID} %s 1\\n' "${id}" > /proc/$h/${file} || { echo "could not write the user namespace's ${file}" >&2; ${fail}; }`)
      : [
          `${DD} of=/proc/$h/uid_map bs=64 iflag=fullblock status=none <<EOF & m=$!\n${map('$1')}EOF`,
          // Its failure waits for the uid map's dd too: left running, it would outlive the wrapper in the step's process group.
          `${DD} of=/proc/$h/gid_map bs=64 iflag=fullblock status=none <<EOF || { wait $m; ${fail}; }\n${map('$2')}EOF`,
          `wait $m || ${fail}`,
        ];
  return [
    `${holder} </dev/null >/dev/null 2>&1 3>&- 4<&- & h=$!`,
    // While the holder starts: the step's rlimits, which bwrap and all it starts inherit (the holder, started before, keeps the server's).
    ...(rlimits.length > 0 ? [`${PRLIMIT} --pid $$ ${rlimits.join(' ')} || ${fail}`] : []),
    // Until the holder is in its new namespace (or gone: then the writes below fail).
    'while [ /proc/$h/ns/user -ef /proc/$$/ns/user ]; do :; done',
    ...writeMaps,
    // `command`: a failed redirection of the special builtin `exec` would end the shell before `fail`.
    `command exec 5</proc/$h/ns/user || ${fail}`,
    'kill -KILL $h; wait $h 2>/dev/null',
    '[ /proc/$$/fd/5 -ef /proc/$$/ns/user ] && exit 125',
    'shift 2\n',
  ].join('\n');
}

/** How a root server's steps make their user namespace (userNamespace). */
interface NamespaceTools {
  holder: string;
  /** The wrapper shell: dash where it is installed, else /bin/sh (which dd then writes the maps for). */
  shell: string;
}

let shellOnce: Promise<string> | undefined;
async function namespaceTools(): Promise<NamespaceTools> {
  shellOnce ??= isExecutable(DASH).then((dash) => (dash ? DASH : '/bin/sh'));
  const [holder, shell] = await Promise.all([namespaceHolder(), shellOnce]);
  return { holder, shell };
}

/** namespaceHolder's where setpriv has --pdeathsig. */
export const PDEATHSIG_HOLDER = `${SETPRIV} --pdeathsig KILL -- ${UNSHARE} --user -- /bin/sh -c '[ "$PPID" = "$0" ] && kill -STOP $$' $$`;
/** namespaceHolder's elsewhere: reaped by the wrapper as the other is, but left to its 10 minutes by a wrapper killed meanwhile. */
export const SLEEPING_HOLDER = `${UNSHARE} --user -- ${SLEEP} 600`;

let holderOnce: Promise<string> | undefined;
/**
 * What holds a step's new user namespace until bwrap has it: `unshare`, under SIGKILL as its
 * parent-death signal where setpriv has `--pdeathsig` (util-linux 2.33; RHEL 8 and Ubuntu 18.04
 * have older), then a shell that checks its parent is still the wrapper once that is set and stops
 * itself (SIGKILL ends a stopped process); elsewhere `sleep`. setpriv comes first and the shell
 * execs nothing: an exec that gains capabilities (any exec once the wrapper has mapped uid 0)
 * makes the kernel clear the parent-death signal, and the holder would be left stopped for ever.
 * One process however it is made: the shell kills and reaps it, and nothing of it is left in the
 * step's process group, whose end the step runner waits for.
 */
function namespaceHolder(): Promise<string> {
  holderOnce ??= runProcess({ command: SETPRIV, args: ['--pdeathsig', 'KILL', '--', '/usr/bin/true'], env: {} }, 10_000).then((result) => {
    // Kept only once setpriv has answered: a spawner that failed or a host too busy asks again.
    if (!('stdout' in result) || result.timedOut) holderOnce = undefined;
    return 'stdout' in result && result.exitCode === 0 ? PDEATHSIG_HOLDER : SLEEPING_HOLDER;
  });
  return holderOnce;
}
const ENTER = 'exec "$@"';
/**
 * A step's bwrap gets the info pipe (fd 3) again as fd 6, which it passes into the sandbox (it
 * closes its --info-fd there): the launcher says on it that the tool starts.
 */
const ENTER_STEP = `exec "$@" ${STARTED_FD}>&3`;
const SECCOMP_ARGS = ['--seccomp', '4'];
/**
 * A new /proc, with the host-wide files in it read-only. For a root server whose steps cannot
 * run as another user, the sandbox's uid is the host's root, without capabilities, but the
 * owner of those files, and the kernel asks many of them for nothing more: a step wrote
 * kernel.core_pattern under /proc/sys, and the host ran its program as root. bwrap covers sys,
 * sysrq-trigger, irq and bus only where access(W_OK) passes as it sets up, which /proc/sys
 * (0555, checked without regard to capabilities) never does, and the others not on every
 * host. fs (cifs settings), acpi (wakeup), scsi (drivers' hosts), dynamic_debug, mtrr and
 * pressure (triggers on the host's root cgroup) are writable files on some hosts. Bound from
 * the host's /proc (with what is mounted in them, read-only too): what they show does not
 * depend on the pid namespace.
 */
const PROC_ARGS = [
  '--proc',
  '/proc',
  ...['--ro-bind', '/proc/sys', '/proc/sys'],
  ...roBindTry(['/proc/sysrq-trigger', '/proc/irq', '/proc/bus', '/proc/fs', '/proc/acpi', '/proc/scsi', '/proc/dynamic_debug', '/proc/mtrr', '/proc/pressure']),
];
/** The filter's file, beside the project's caches: no sandbox mounts that folder, so none can change it. */
const SECCOMP_FILE = '.seccomp-filter';

/**
 * Decides once, at start, how builds run: bwrap where it works (or where BUILD_SANDBOX=bwrap
 * demands it), none otherwise, which production refuses without ALLOW_UNSANDBOXED_BUILDS.
 */
export async function createBuildSandbox(settings: SandboxSettings, logger: Logger, filter = buildStepFilter()): Promise<BuildSandbox> {
  const log = logger.child({ source: 'BuildSandbox' });
  const serverUid = process.getuid?.() ?? -1;
  const stepUser = settings.stepUser ?? { uid: DEFAULT_SANDBOX_UID, explicit: false };
  if (settings.kind !== 'none' && stepUser.explicit && serverUid !== 0) {
    throw new ConfigError([
      `BUILD_SANDBOX_UID=${stepUser.uid} is for a server running as root; this one runs as uid ${serverUid}, an unprivileged user its build steps run as already: unset BUILD_SANDBOX_UID`,
    ]);
  }
  let seccomp = filter;
  const wanted = { uid: stepUser.uid, gid: stepUser.uid };
  // A root server probes with the switch first: where it works (the usual start), that one probe
  // says bwrap and the filter work too. Only where it fails do the plain probes say what does.
  const switchProbed = settings.kind !== 'none' && serverUid === 0 && seccomp !== undefined;
  const switchFailure = switchProbed ? await probeWith(seccomp, wanted) : undefined;
  let problem: string | undefined;
  if (settings.kind !== 'none' && (!switchProbed || switchFailure)) {
    problem = await probeWith(seccomp);
    if (problem && seccomp && !(await probeWith(undefined))) {
      log.warn({ problem }, 'bwrap works here, but not with the seccomp filter: builds run in the sandbox without it (fallocate, its ioctls, io_uring and setuid or setgid modes are not refused)');
      seccomp = undefined;
      problem = undefined;
    }
  }
  if (settings.kind === 'none' || problem) {
    if (settings.kind === 'bwrap') throw new ConfigError([`BUILD_SANDBOX=bwrap, but bwrap does not work here: ${problem}`]);
    if (stepUser.explicit) throw new ConfigError([`BUILD_SANDBOX_UID=${stepUser.uid} needs the bwrap sandbox, and builds here would run without one (${problem ?? 'BUILD_SANDBOX=none'}), as this server's own user`]);
    if (!settings.allowUnsandboxed) {
      throw new ConfigError([
        `NODE_ENV=production needs the build sandbox, and bwrap does not work here (${problem}): install bubblewrap, or set ALLOW_UNSANDBOXED_BUILDS=true if something else isolates builds`,
      ]);
    }
    log.warn(
      { sandbox: 'none', reason: problem ?? 'BUILD_SANDBOX=none' },
      'Builds run WITHOUT a sandbox: generated code can read this server\'s secrets and files. Use BUILD_SANDBOX=bwrap wherever users are not fully trusted.',
    );
    return { kind: 'none', enforcement: 'none', hostUid: serverUid, forStep: () => undefined };
  }
  let stepOwner: Owner | undefined;
  if (serverUid === 0) {
    // Without --disable-userns (which --userns excludes), only the filter keeps a step from a user namespace of its own.
    const switchProblem = seccomp ? switchFailure : 'the seccomp filter, which refuses nested user namespaces there, does not load here';
    if (!switchProblem) stepOwner = wanted;
    else if (stepUser.explicit) throw new ConfigError([`BUILD_SANDBOX_UID=${stepUser.uid}, but this server cannot run its build steps as that user: ${switchProblem}`]);
    else {
      log.warn(
        { problem: switchProblem, hostUid: 0 },
        `build steps run as the host's root user (uid 0, without capabilities), not as uid ${stepUser.uid}: their files are root's, and what the kernel asks no capability of is theirs to use. Install util-linux (unshare, setpriv) and coreutils (sleep, dd), or run Kiln as a non-root user`,
      );
    }
  }
  const cgroups = await findCgroups();
  const prlimit = await isExecutable(PRLIMIT);
  if (!prlimit) {
    log.warn({ missing: PRLIMIT }, 'build steps run without their rlimits (processes, file size, core dumps, priority, open files): install util-linux (prlimit)');
  }
  const rlimits = prlimit ? rlimitOptions(settings.limits, stepOwner !== undefined && cgroups !== undefined) : [];
  // A root server's wrapper shell sets the rlimits on itself while the namespace's holder starts (userNamespace): one program fewer before the tool.
  const runFirst = [...((await isExecutable(NICE)) ? [NICE, '-n', String(STEP_NICENESS)] : []), ...(rlimits.length > 0 && !stepOwner ? [PRLIMIT, ...rlimits, '--'] : [])];
  // The host's system folders are as they were at start: looked at once, not for every step.
  const system = await systemMounts();
  const hidden = { ...settings.hiddenDirs, "the server's working directory": process.cwd(), "Kiln's own folder": KILN_FOLDER };
  const enforcement = cgroups ? (cgroups.version === 2 ? 'cgroup v2' : 'cgroup v1') : 'rlimits and polling';
  const hostUid = stepOwner?.uid ?? serverUid;
  log.info(
    {
      sandbox: 'bwrap',
      enforcement,
      hostUid,
      limits: settings.limits,
      seccomp: seccomp ? 'fallocate, its ioctls, io_uring, openat2, new user namespaces and setuid or setgid modes refused' : 'none',
    },
    `builds run in the bwrap sandbox, as host uid ${hostUid}`,
  );
  return {
    kind: 'bwrap',
    enforcement,
    hostUid,
    ...(stepOwner && { stepOwner }),
    forStep: (stepAccess) => ({
      enter: (step) =>
        enterBwrap(step, stepAccess, {
          limits: settings.limits,
          cgroups,
          runFirst,
          wrapperRlimits: stepOwner ? rlimits : [],
          system,
          seccomp,
          hidden,
          owner: stepOwner,
          // A root server that runs its steps as root (the switch failed this time) takes back what switched steps were given.
          filesOwner: stepOwner ?? (serverUid === 0 ? { uid: 0, gid: 0 } : undefined),
        }),
    }),
  };
}

/** Undefined when bwrap can make the sandbox here, else why not. */
export function probeBwrap(): Promise<string | undefined> {
  return probeWith(buildStepFilter());
}

/** probeBwrap with this seccomp filter, or none; with `owner`, a root server's steps run as that host user. */
async function probeWith(seccomp: Buffer | undefined, owner?: Owner): Promise<string | undefined> {
  if (!(await isExecutable(BWRAP))) return `${BWRAP} is not installed (Debian/Ubuntu: apt-get install bubblewrap)`;
  if (owner) {
    for (const tool of [UNSHARE, SETPRIV, SLEEP, DD]) if (!(await isExecutable(tool))) return `${tool} is not installed (Debian/Ubuntu: util-linux and coreutils)`;
  }
  const args = [
    ...namespaceArgs(false, owner),
    ...(await systemMounts()).args,
    ...PROC_ARGS,
    '--dev',
    '/dev',
    '--remount-ro',
    '/dev',
    ...(seccomp ? SECCOMP_ARGS : []),
    '--',
    ...(owner ? userSwitch() : []),
    '/usr/bin/true',
  ];
  const dir = seccomp ? await mkdtemp(join(tmpdir(), 'kiln-probe-')) : undefined;
  let result: Awaited<ReturnType<typeof runProcess>>;
  try {
    const filterFile = dir ? await filterFileIn(dir, seccomp!) : undefined;
    const namespace = owner && { owner, ...(await namespaceTools()) };
    result = await runProcess({ ...bwrapCommand(filterFile, [], args, { namespace, step: false }), env: {} }, 10_000);
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true });
  }
  if (!('stdout' in result)) return `${BWRAP} could not be started: ${result.message}`;
  return result.exitCode === 0 ? undefined : `${BWRAP} failed: ${result.stderr.trim() || (result.timedOut ? 'no answer within 10 s' : `exit code ${result.exitCode}`)}`;
}

interface Machine {
  limits: StepLimits;
  cgroups: CgroupLayout | undefined;
  /** Inside the sandbox, before the tool: its priority (nice) and, unless the wrapper sets them (wrapperRlimits), its rlimits (prlimit), where the host has them. */
  runFirst: string[];
  /** prlimit's options, for a root server's wrapper shell to set on itself (and bwrap, which it becomes) instead. */
  wrapperRlimits: string[];
  /** systemMounts(). */
  system: { args: string[]; dirs: string[] };
  /** The seccomp filter (seccomp.ts); undefined on an architecture it does not know. */
  seccomp: Buffer | undefined;
  /** Folders no step may see, by the setting that names them. */
  hidden: Readonly<Record<string, string>>;
  /** The host user a root server's steps run as; undefined: the server's own uid (mapped to 1000 by bwrap). */
  owner: Owner | undefined;
  /** Who a root server's project caches and Flutter lock go to: the steps' user, or root when its steps run as root. */
  filesOwner: Owner | undefined;
}

/** The filter's file in `dir`, written aside and renamed unless it is there already: a step starting meanwhile reads a whole filter. */
async function filterFileIn(dir: string, filter: Buffer): Promise<string> {
  const file = join(dir, SECCOMP_FILE);
  if ((await readFile(file).catch(() => undefined))?.equals(filter)) return file;
  const draft = `${file}.${randomUUID()}`;
  try {
    await writeFile(draft, filter);
    await rename(draft, file);
  } finally {
    await rm(draft, { force: true });
  }
  return file;
}

/**
 * bwrap, started with the filter in `filterFile` (none without), in the cgroups whose
 * `cgroup.procs` are listed, and with `namespace`, in a user namespace of its own (userNamespace).
 * In that order: the filter and the cgroups are joined as the server, before any namespace.
 * `step`: a step's, whose launcher reports on STARTED_FD that its tool starts (ENTER_STEP).
 */
function bwrapCommand(
  filterFile: string | undefined,
  procsFiles: readonly string[],
  bwrapArgs: readonly string[],
  { namespace, step }: { namespace: ({ owner: Owner; rlimits?: readonly string[] } & NamespaceTools) | undefined; step: boolean },
): { command: string; args: string[] } {
  if (!filterFile && procsFiles.length === 0 && !namespace && !step) return { command: BWRAP, args: [...bwrapArgs] };
  const script = (filterFile ? OPEN_FILTER : '') + JOIN_CGROUP + (namespace ? userNamespace(namespace, namespace.rlimits ?? []) : '') + (step ? ENTER_STEP : ENTER);
  const ids = namespace ? [String(namespace.owner.uid), String(namespace.owner.gid)] : [];
  return { command: namespace?.shell ?? '/bin/sh', args: ['-c', script, filterFile ?? 'kiln-sandbox', ...procsFiles, '--', ...ids, BWRAP, ...bwrapArgs] };
}

async function enterBwrap(step: StepCommand, stepAccess: StepAccess, machine: Machine): Promise<Jail | { missing: 'ENOENT' | 'EACCES' }> {
  const found = await findExecutable(step.command, step.env.PATH ?? '');
  if ('missing' in found) return found;
  const workspace = await realpath(step.cwd);
  const toolchain = [toolchainRoot(found.real)];
  const binDirs = [dirname(found.real)];
  if (stepAccess.tool === 'npm') {
    // npm is a Node script: the Node that runs it comes from the same PATH as on the server.
    const node = await findExecutable('node', step.env.PATH ?? '');
    if (!('missing' in node)) {
      toolchain.push(toolchainRoot(node.real));
      binDirs.unshift(dirname(node.real));
    }
  }
  const { system } = machine;
  const masks = await masksOver(machine.hidden, system.dirs, toolchain);
  // A system folder's toolchain (Debian's /usr/bin/node) may hold the workspace where a mask
  // hides the workspaces around it (Kiln in /usr/src/app): the step's own is bound again alone.
  const maskedWorkspace = masks.some((dir) => within(workspace, dir));
  for (const root of toolchain) if (!(maskedWorkspace && system.dirs.some((dir) => within(root, dir)))) assertExposable(root, workspace);
  const { owner } = machine;
  // A root server's steps are another user, to whom the tool must be open, as a system's tools are.
  if (owner) for (const root of toolchain) await assertOpenToOthers(root, owner);
  const toolLock = stepAccess.tool === 'flutter' ? await flutterLock(toolchain[0]!, stepAccess.cacheDir, machine.filesOwner) : undefined;

  const cache = { npm: join(stepAccess.cacheDir, 'npm'), pub: join(stepAccess.cacheDir, 'pub') };
  // The server's alone (0700), like the workspaces around it: see createWorkspace. Each cache
  // is bound on its own, so no step can swap one for a symlink (the next step's bind would follow it).
  await mkdir(stepAccess.cacheDir, { recursive: true, mode: 0o700 });
  for (const dir of Object.values(cache)) {
    // An older Kiln bound the whole folder into the fetch, which may have left a symlink: mkdir never follows one.
    if ((await lstat(dir).catch(() => undefined))?.isSymbolicLink()) await rm(dir);
    const made = await mkdir(dir, { mode: 0o700 }).then(() => true, ignoreExisting);
    // A root server's steps write the caches as their own user: a cache that is not theirs yet
    // (new, or filled by an older Kiln whose steps were root, or by switched steps before a
    // start whose switch failed) is given to them, whole.
    const to = machine.filesOwner;
    if (to) await (made ? lchown(dir, to.uid, to.gid) : giveTree(dir, to));
  }
  const env: Record<string, string> = {};
  // Only the fetch talks to a registry, maybe through a proxy with its own CA.
  for (const name of [...ENV_ALWAYS, ...(stepAccess.fetch ? REGISTRY_ENV : [])]) {
    const value = step.env[name];
    if (value !== undefined) env[name] = value;
  }
  Object.assign(env, {
    PATH: [...new Set(binDirs), '/usr/local/bin', '/usr/bin', '/bin'].join(':'),
    HOME,
    TMPDIR: '/tmp',
    USER: 'kiln',
    npm_config_cache: stepAccess.fetch ? cache.npm : PRIVATE_NPM_CACHE,
    npm_config_logs_dir: '/tmp/npm-logs',
    npm_config_update_notifier: 'false',
    PUB_CACHE: cache.pub,
    ...(owner ? trustedRepositories(toolchain) : {}),
  });

  const roots = [...new Set(toolchain)];
  const outerMasks = masks.filter((dir) => !masks.some((other) => other !== dir && within(dir, other)));
  const reboundRoots = roots.filter((root) => outerMasks.some((dir) => within(root, dir)));
  // A hidden folder inside a toolchain folder bound again is hidden again, on top of it.
  const innerMasks = masks.filter((dir) => !outerMasks.includes(dir) && reboundRoots.some((root) => within(dir, root)));
  /**
   * The folders on the way to a mount, made by bwrap where no mount holds them (mode 0700, as
   * the namespace's root): a root server's steps, another uid, must pass through them. Made
   * first, each 0755 (`--dir` leaves one that is there as it is).
   */
  const reachable = (path: string): string[] => (owner ? foldersTo(path).flatMap((dir) => ['--perms', '0755', '--dir', dir]) : []);
  const caFiles = stepAccess.fetch ? CA_PATH_VARS.map((name) => env[name]).filter((p): p is string => !!p && isAbsolute(p)) : [];
  const bwrapArgs = [
    ...namespaceArgs(stepAccess.fetch, owner),
    '--hostname',
    'kiln-build',
    ...system.args,
    ...reachable(ETC_ALWAYS[0]!),
    ...roBindTry([...ETC_ALWAYS, ...(stepAccess.fetch ? ETC_FETCH : [])]),
    ...PROC_ARGS,
    '--dev',
    '/dev',
    // bwrap makes them as the namespace's root: open to the steps' user when it is another uid.
    // HOME is the launcher's to make, the steps' user's own.
    ...['--size', String(machine.limits.tmpMb * 1024 * 1024), ...sharedPerms(owner), '--tmpfs', '/tmp'],
    ...['--size', String(64 * 1024 * 1024), ...sharedPerms(owner), '--tmpfs', '/dev/shm'],
    // After the private /tmp, since a toolchain, a CA file or the workspace may live under the host's /tmp.
    ...roots.flatMap((root) => [...reachable(root), '--ro-bind', root, root]),
    // Later mounts go on top: the masks hide the server's folders, then what the step needs
    // from inside them (its toolchain, a CA file, its workspace and caches) is bound again.
    ...outerMasks.flatMap((dir) => ['--tmpfs', dir]),
    ...reboundRoots.flatMap((root) => [...reachable(root), '--ro-bind', root, root]),
    ...innerMasks.flatMap((dir) => ['--tmpfs', dir]),
    ...caFiles.flatMap((file) => [...reachable(file), ...roBindTry([file])]),
    ...(toolLock ? ['--bind', toolLock.own, toolLock.sdk] : []),
    ...[...reachable(workspace), '--bind', workspace, workspace],
    // The fetch's npm cache holds whatever it downloaded (a reply from an address a package
    // named too): no step that runs project code sees it, node_modules holds the packages.
    // Flutter's steps read the packages in the pub cache.
    ...(stepAccess.fetch
      ? [...reachable(cache.npm), '--bind', cache.npm, cache.npm, '--bind', cache.pub, cache.pub]
      : stepAccess.tool === 'flutter'
        ? [...reachable(cache.pub), '--ro-bind', cache.pub, cache.pub]
        : []),
    // The root, the masks and /dev are tmpfs: nothing but the workspace (and the fetch's cache),
    // the bounded /tmp and /dev/shm (mounts of their own, left writable) is writable. /dev,
    // unbounded, would hold any amount of the host's memory, which a watch of resident memory
    // does not count; its devices and /dev/pts work read-only.
    ...[...outerMasks, ...innerMasks].flatMap((dir) => ['--remount-ro', dir]),
    ...['--remount-ro', '/dev'],
    ...['--remount-ro', '/'],
    ...['--info-fd', '3'],
    ...(machine.seccomp ? SECCOMP_ARGS : []),
    '--',
    ...(owner ? userSwitch() : []),
    ...machine.runFirst,
    ...launcher(workspace),
    found.real,
    ...step.args,
  ];

  // Before the cgroup: a step that cannot start leaves none behind.
  const filterFile = machine.seccomp ? await filterFileIn(dirname(stepAccess.cacheDir), machine.seccomp) : undefined;
  const cgroup = machine.cgroups
    ? await createStepCgroup(machine.cgroups, { maxProcesses: machine.limits.maxProcesses, memoryBytes: machine.limits.memoryMb * 1024 * 1024 })
    : undefined;
  const namespace = owner && { owner, ...(await namespaceTools()), rlimits: machine.wrapperRlimits };
  return jail(bwrapCommand(filterFile, cgroup?.procsFiles ?? [], bwrapArgs, { namespace, step: true }), {
    env,
    cgroup,
    limits: machine.limits,
    diskPaths: [workspace, ...(stepAccess.fetch ? [stepAccess.cacheDir] : []), ...(toolLock ? [toolLock.own] : [])],
    emptiedAfter: toolLock?.own,
  });
}

function jail(
  spawn: { command: string; args: string[] },
  context: { env: Record<string, string>; cgroup?: StepCgroup; limits: StepLimits; diskPaths: string[]; emptiedAfter?: string },
): Jail {
  let watch: LimitWatch | undefined;
  let sandboxInit: number | undefined;
  let toolStarts: (started: boolean) => void = () => undefined;
  const toolStarted = new Promise<boolean>((resolve) => (toolStarts = resolve));
  return {
    ...spawn,
    env: context.env,
    started(pid, info, onExceeded) {
      // bwrap reports the host pid of the sandbox's init; once it is gone, so is every process of the namespace.
      // The launcher then says the tool starts: the pipe is closed to the tool, and nothing after that is read.
      let text = '';
      info.setEncoding('utf8');
      info.on('data', (data: string) => {
        text += data;
        const match = /"child-pid"\s*:\s*(\d+)/.exec(text);
        if (match) sandboxInit = Number(match[1]);
        const starts = text.includes(TOOL_STARTS);
        if (starts) toolStarts(true);
        if ((starts && sandboxInit !== undefined) || text.length > MAX_INFO_LENGTH) info.destroy();
      });
      info.on('close', () => toolStarts(false));
      info.on('error', () => undefined);
      watch = watchLimits({ limits: context.limits, cgroup: context.cgroup, rootPid: () => pid, diskPaths: context.diskPaths, onExceeded });
    },
    toolStarted: () => toolStarted,
    async release() {
      // The last look at the limits once nothing of the step runs: none of it can move files out of du's way then.
      // Without the init's pid, all there was to wait for is bwrap, whose group the step runner waited for.
      const ended = sandboxInit === undefined || (await vanished(sandboxInit));
      const exceeded = await watch?.stop(ended);
      await context.cgroup?.remove();
      // What the step wrote into the project's Flutter lock goes with it.
      if (context.emptiedAfter) await truncate(context.emptiedAfter).catch(() => undefined);
      return exceeded;
    },
  };
}

/**
 * In a root server's steps, the first thing bwrap runs: setpriv drops from the namespace's root
 * (bwrap's, with CAP_SETUID and CAP_SETGID only) to uid and gid 1000, the steps' host user, with
 * no supplementary group and every capability set empty (bounding set included), so nothing it
 * starts can get one back. bwrap cannot switch itself in --userns mode ("unable to switch to gid
 * 1000").
 */
function userSwitch(): string[] {
  return [SETPRIV, `--reuid=${SANDBOX_UID}`, `--regid=${SANDBOX_UID}`, '--clear-groups', '--bounding-set=-all', '--inh-caps=-all', '--no-new-privs', '--'];
}

/**
 * The last thing before the tool, as the steps' user: a shell that makes HOME theirs alone
 * (0700: gpg and ssh refuse a shared one; one bwrap made on the way to a bind stays as it is),
 * says on STARTED_FD that the tool starts, closes that and the namespace's fd (5), which bwrap
 * passes on, and changes into `cwd` (a root server's bwrap, the namespace's root without
 * CAP_DAC_OVERRIDE, may not enter a folder of theirs). A failure before the line (the wrapper
 * shell, bwrap's own set-up, the user switch) is the server's; the `cd` comes after it, since
 * the project's code of an earlier step may have closed its own folder to the next one.
 */
function launcher(cwd: string): string[] {
  const script = `mkdir -p -m 0700 ${HOME} && echo ${TOOL_STARTS} >&${STARTED_FD} && exec ${STARTED_FD}>&- 5<&- && cd -- "$1" && shift && exec "$@"`;
  return ['/bin/sh', '-c', script, 'kiln-step', cwd];
}

/**
 * git refuses a repository another user owns ("detected dubious ownership"), and a Flutter SDK is
 * a git checkout of the host's root, which the flutter tool asks for its version: a root server's
 * steps trust their toolchain folders by name, as command-scope config (git 2.35.2 and later),
 * and no other repository.
 */
function trustedRepositories(roots: readonly string[]): Record<string, string> {
  const unique = [...new Set(roots)];
  return Object.fromEntries([
    ['GIT_CONFIG_COUNT', String(unique.length)],
    ...unique.flatMap((root, index) => [
      [`GIT_CONFIG_KEY_${index}`, 'safe.directory'],
      [`GIT_CONFIG_VALUE_${index}`, root],
    ]),
  ]);
}

/** `--perms` for the next tmpfs or folder bwrap makes: open to all (sticky) when the steps' user is not the namespace's root. */
function sharedPerms(owner: Owner | undefined): string[] {
  return owner ? ['--perms', '1777'] : [];
}

/**
 * A root server's steps (`owner`): bwrap joins the user namespace on fd 5 (userNamespace), where it
 * cannot take --unshare-user, --disable-userns or --uid; the seccomp filter refuses nested user
 * namespaces instead, and userSwitch sets the uid. Otherwise bwrap makes the user namespace,
 * mapping 1000 to the server's own uid.
 */
function namespaceArgs(network: boolean, owner?: Owner): string[] {
  if (owner) {
    return [
      ...['--userns', '5'],
      '--unshare-ipc',
      '--unshare-pid',
      ...(network ? [] : ['--unshare-net']),
      '--unshare-uts',
      '--unshare-cgroup-try',
      '--die-with-parent',
      '--new-session',
      ...['--cap-add', 'CAP_SETUID', '--cap-add', 'CAP_SETGID'],
    ];
  }
  return [
    '--unshare-all',
    '--unshare-user',
    ...(network ? ['--share-net'] : []),
    // No nested user namespaces: less kernel surface, no way around the uid mapping.
    '--disable-userns',
    '--die-with-parent',
    '--new-session',
    '--uid',
    SANDBOX_UID,
    '--gid',
    SANDBOX_UID,
  ];
}

/** /usr read-only, and /bin, /lib* as the host has them (merged-/usr symlinks or folders); `dirs` are the folders bound. */
async function systemMounts(): Promise<{ args: string[]; dirs: string[] }> {
  const args: string[] = [];
  const dirs: string[] = [];
  for (const dir of SYSTEM_DIRS) {
    const stats = await lstat(dir).catch(() => undefined);
    if (!stats) continue;
    if (stats.isSymbolicLink()) {
      args.push('--symlink', await readlink(dir), dir);
    } else if (stats.isDirectory()) {
      args.push('--ro-bind', dir, dir);
      dirs.push(dir);
    }
  }
  return { args, dirs };
}

/** The folders above `path`, outermost first, `/` left out. */
function foldersTo(path: string): string[] {
  const parts = path.split(sep).filter(Boolean).slice(0, -1);
  return parts.map((_, index) => sep + parts.slice(0, index + 1).join(sep));
}

function roBindTry(paths: string[]): string[] {
  return paths.flatMap((path) => ['--ro-bind-try', path, path]);
}

/**
 * `behindCgroup`: a root server's steps, another user's, whose cgroup holds them to maxProcesses.
 * RLIMIT_NPROC then counts too (the kernel exempts only the host's root), per step (each has a
 * user namespace of its own, and the count is per namespace and uid from Linux 5.14), but it refuses the fork
 * first, silently to the watch, which reads the cgroup's count of refusals: twice the limit, it
 * stays a backstop and the cgroup's limit, which the build log names, is the one reached.
 */
function rlimitOptions(limits: StepLimits, behindCgroup: boolean): string[] {
  return [
    // Counted per sandbox (its user namespace's), whoever the server is; without a cgroup the watch counts too.
    `--nproc=${limits.maxProcesses * (behindCgroup ? 2 : 1)}`,
    // One file cannot outgrow the workspace limit, however fast it is written.
    `--fsize=${limits.workspaceMb * 1024 * 1024}`,
    '--core=0',
    // No raising its priority again, whatever limit the server was given (systemd's LimitNICE).
    '--nice=0',
    // Not the server's own (Node raises it to the hard limit): each descriptor is one more for
    // the disk watch to read (step-limits.ts), and npm, vite and flutter need far fewer.
    `--nofile=${STEP_MAX_OPEN_FILES}`,
  ];
}

/**
 * The Flutter tool takes a lock in its SDK (`bin/cache/lockfile`) even when it only reads
 * the SDK: each project gets a lock file of its own there, the rest of the SDK stays
 * read-only (so it must be precached: `flutter precache --web`). The file lives in the
 * project's folder, which no sandbox can write, so it cannot be swapped for a symlink.
 * A step can write into it, so it is emptied before and after each step and counts as workspace.
 * A root server's steps write it as the user they run as (`owner`), whose it is made (an earlier user's is taken back).
 */
async function flutterLock(sdkRoot: string, cacheDir: string, owner: Owner | undefined): Promise<{ own: string; sdk: string } | undefined> {
  const sdk = join(sdkRoot, 'bin', 'cache', 'lockfile');
  if (!(await lstat(sdk).catch(() => undefined))?.isFile()) return undefined;
  const own = join(dirname(cacheDir), '.flutter-lockfile');
  const handle = await open(own, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
  try {
    await giveOpened(handle, await handle.stat(), owner);
  } finally {
    await handle.close();
  }
  return { own, sdk };
}

function ignoreExisting(error: NodeJS.ErrnoException): void {
  if (error.code !== 'EEXIST') throw error;
}

async function assertOpenToOthers(root: string, owner: Owner): Promise<void> {
  const stats = await lstat(root);
  if ((stats.mode & 0o005) !== 0o005 && stats.uid !== owner.uid) {
    throw new Error(`The toolchain folder ${root} is not open to other users (mode ${(stats.mode & 0o777).toString(8)}), and this root server's build steps run as uid ${owner.uid}: make it readable by all (chmod a+rX).`);
  }
}

/** A toolchain's own folder: the SDK or package root above its `bin/`, else the executable's folder. */
export function toolchainRoot(realExecutable: string): string {
  const folder = dirname(realExecutable);
  return basename(folder) === 'bin' ? dirname(folder) : folder;
}

// A toolchain folder that holds the workspace (or is /) would expose far more than the tool.
function assertExposable(root: string, workspace: string): void {
  if (root === sep || within(workspace, root)) {
    throw new Error(`The toolchain folder ${root} contains the workspace; install the build tool in a folder of its own.`);
  }
}

/**
 * The hidden folders to mask: those a read-only system folder holds (/usr/src/app). A
 * toolchain folder of its own that holds one would show it, and much else of the server
 * around it, so it is refused, as is a hidden folder that is itself bound read-only.
 */
async function masksOver(hidden: Readonly<Record<string, string>>, system: string[], toolchain: string[]): Promise<string[]> {
  const masks: string[] = [];
  for (const [setting, dir] of Object.entries(hidden)) {
    const real = await realpath(dir).catch(() => undefined);
    if (!real) continue;
    for (const root of [...system, ...toolchain]) {
      // A toolchain folder inside a system folder shows nothing the system folder does not: the masks cover it.
      const inSystem = system.some((systemDir) => within(root, systemDir));
      if (real === root || (!inSystem && within(real, root))) {
        throw new Error(`${root}, which every build step sees read-only, contains ${setting} (${real}): install the build tool in a folder of its own, or move ${setting} out of it.`);
      }
    }
    if (system.some((systemDir) => within(real, systemDir))) masks.push(real);
  }
  return [...new Set(masks)];
}

/** `path` is `folder` or lies inside it. */
function within(path: string, folder: string): boolean {
  return path === folder || path.startsWith(folder.endsWith(sep) ? folder : folder + sep);
}

async function findExecutable(command: string, path: string): Promise<{ real: string } | { missing: 'ENOENT' | 'EACCES' }> {
  const candidates = command.includes('/') ? [resolve(command)] : path.split(delimiter).filter(Boolean).map((dir) => join(dir, command));
  let missing: 'ENOENT' | 'EACCES' = 'ENOENT';
  for (const candidate of candidates) {
    const real = await realpath(candidate).catch(() => undefined);
    if (!real) continue;
    if (await isExecutable(real)) return { real };
    missing = 'EACCES';
  }
  return { missing };
}

async function isExecutable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** Whether `pid` has exited (or is a zombie waiting to be reaped) within a few seconds. */
async function vanished(pid: number): Promise<boolean> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const state = (await readProcStat(pid))?.state;
    if (state === undefined || state === 'Z') return true;
    await delay(5);
  }
  return false;
}
