import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { constants, existsSync } from 'node:fs';
import { access, chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { getPriority, tmpdir } from 'node:os';
import { basename, delimiter, dirname, join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_SANDBOX_UID, parseConfig } from '../src/config.js';
import { createLogger } from '../src/observability/logger.js';
import type { BuildTool } from '../src/toolchain/build-steps.js';
import { type BuildSandbox, createBuildSandbox, probeBwrap, type SandboxSettings, STEP_NICENESS, toolchainRoot } from '../src/toolchain/sandbox.js';
import { buildEnv, type OutputLine, runStep, type StepResult } from '../src/toolchain/step-runner.js';
import { applyChanges } from '../src/workspace/apply-changes.js';
import { createWorkspace } from '../src/workspace/workspace.js';
import { databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import { startAccepted, waitForEnd } from './support/generation-helpers.js';
import { hostProcessesWith } from './support/hostile-project.js';
import { LogCapture, startCapturedServer } from './support/log-capture.js';

// The build sandbox as a step sees it: what it may reach (network and cache only when it
// fetches dependencies), what it inherits (a short allowlist), and that nothing it starts
// outlives it, however the step ends.

const bwrapProblem = await probeBwrap();
const LIMITS = { memoryMb: 512, maxProcesses: 128, workspaceMb: 64, tmpMb: 32 };
const why = bwrapProblem ? ` (skipped: ${bwrapProblem})` : '';
const npmRoot = await realNpmRoot();
/** Where a test may stand in for Kiln installed under /usr (a root user's test run). */
const USR_SCRATCH = '/usr/local/share';
const usrWritable = await access(USR_SCRATCH, constants.W_OK).then(() => true, () => false);
const hasPerl = existsSync('/usr/bin/perl');
const hasPython = existsSync('/usr/bin/python3');
const hasGit = existsSync('/usr/bin/git');
/** Whether this process may stat /proc/<pid>/map_files (root, CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE): the size of a mapped deleted file comes from there. */
const mapFilesReadable = await readdir('/proc/self/map_files').then(
  ([entry]) => entry !== undefined && stat(`/proc/self/map_files/${entry}`).then(() => true, () => false),
  () => false,
);
const rootServer = process.getuid?.() === 0;
const notRootWhy = rootServer ? '' : ' (skipped: this server is not root; its steps run as its own unprivileged uid)';
const mapFilesWhy = mapFilesReadable ? '' : ' (skipped: /proc/<pid>/map_files cannot be stat\'ed without root, CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, so only the mapped page counts)';

describe.skipIf(bwrapProblem !== undefined)(`a step in the bwrap sandbox${why}`, () => {
  let sandbox: BuildSandbox;
  let root: string;
  let workspace: string;
  let cacheDir: string;
  let tool: string;

  beforeAll(async () => {
    sandbox = await createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: LIMITS }, createLogger('silent'));
  });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-sandbox-'));
    workspace = join(root, 'workspaces', 'project', 'generation');
    cacheDir = join(root, 'workspaces', 'project', '.cache');
    await mkdir(workspace, { recursive: true });
    await giveToSteps(workspace);
    // A tool laid out as an SDK (`<root>/bin/tool`) that runs the shell script it is given.
    await mkdir(join(root, 'sdk', 'bin'), { recursive: true });
    tool = join(root, 'sdk', 'bin', 'tool');
    await writeFile(tool, '#!/bin/sh\nexec sh -c "$1"\n');
    await chmod(tool, 0o755);
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** A workspace as createWorkspace makes it: a root server's steps' user's (BuildSandbox.stepOwner). */
  async function giveToSteps(dir: string) {
    if (sandbox.stepOwner) await chown(dir, sandbox.stepOwner.uid, sandbox.stepOwner.gid);
  }

  interface RunOptions {
    fetch?: boolean;
    tool?: BuildTool;
    /** The executable and its arguments instead of the SDK-like tool and the script. */
    command?: [string, ...string[]];
    /** Another sandbox than the suite's. */
    sandbox?: BuildSandbox;
    env?: Record<string, string>;
    /** Another workspace than the suite's. */
    cwd?: string;
    timeoutMs?: number;
    onLine?: (line: OutputLine) => void;
    signal?: AbortSignal;
  }

  async function run(script: string, options: RunOptions = {}) {
    const lines: string[] = [];
    const [command, ...args] = options.command ?? [tool, script];
    const result: StepResult = await runStep({
      command,
      args,
      cwd: options.cwd ?? workspace,
      env: buildEnv(options.env ?? {}),
      timeoutMs: options.timeoutMs ?? 30_000,
      signal: options.signal,
      killGraceMs: 200,
      onLine: (line) => {
        lines.push(line.text);
        options.onLine?.(line);
      },
      sandbox: (options.sandbox ?? sandbox).forStep({ tool: options.tool ?? 'flutter', fetch: options.fetch ?? false, cacheDir }),
    });
    return { result, lines };
  }

  it('keeps the sandbox, without the seccomp filter and with a warning, where bwrap cannot load the filter', async () => {
    const logs = new LogCapture();
    const withFilter = sandbox;
    // Seven bytes: not a whole BPF instruction, which bwrap refuses to load.
    sandbox = await createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: LIMITS }, createLogger('info', logs), Buffer.alloc(7));
    try {
      expect(sandbox.kind).toBe('bwrap');
      const { result, lines } = await run('id -u');
      expect(result.status).toBe('SUCCEEDED');
      expect(lines).toEqual(['1000']);
      expect(logs.records().find((record) => record.level === 40)?.msg).toMatch(/not with the seccomp filter/);
    } finally {
      sandbox = withFilter;
    }
  });

  describe.skipIf(!rootServer)(`on a root server${notRootWhy}`, () => {
    it('runs every step as an unprivileged host user, with no capability: what it writes is that user\'s, not root\'s', async () => {
      expect(sandbox.stepOwner).toEqual({ uid: DEFAULT_SANDBOX_UID, gid: DEFAULT_SANDBOX_UID });
      for (const fetch of [false, true]) {
        const { result, lines } = await run("id -u; touch made; grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status | tr -s '\\t ' ' '", { fetch });
        expect(result.status).toBe('SUCCEEDED');
        // 1000 inside, as before; on the host, the steps' user.
        expect(lines).toEqual(['1000', 'Uid: 1000 1000 1000 1000', 'Gid: 1000 1000 1000 1000', ...['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'].map((set) => `${set}: 0000000000000000`), 'NoNewPrivs: 1']);
        const made = await stat(join(workspace, 'made'));
        expect([made.uid, made.gid]).toEqual([DEFAULT_SANDBOX_UID, DEFAULT_SANDBOX_UID]);
      }
    });

    it("cannot read a root-only file of the host's that it sees", async () => {
      // A file in the toolchain's folder (bound read-only), the host root's own, 0600: its owner's before.
      await writeFile(join(root, 'sdk', 'root-only.txt'), 'the host root\'s secret', { mode: 0o600 });
      const { result, lines } = await run(`cat ${join(root, 'sdk', 'root-only.txt')} 2>&1 || echo refused`);
      expect(result.status).toBe('SUCCEEDED');
      expect(lines.at(-1)).toBe('refused');
      expect(lines.join('\n')).not.toContain('secret');
    });

    it.skipIf(!hasGit)("lets git read the toolchain's repository, the host root's (a Flutter SDK is a git checkout)", async () => {
      const sdk = join(root, 'sdk');
      expect(spawnSync('git', ['init', '-q', sdk]).status).toBe(0);
      // Without trusting it, git refuses another user's repository: "detected dubious ownership".
      const { result, lines } = await run(`git -C ${sdk} rev-parse --is-inside-work-tree 2>&1`);
      expect(result.status).toBe('SUCCEEDED');
      expect(lines).toEqual(['true']);
    });

    it("takes the caches and Flutter's lock back when a later start runs its steps as root (its switch failed)", async () => {
      const lock = join(root, 'sdk', 'bin', 'cache', 'lockfile');
      await mkdir(dirname(lock));
      await writeFile(lock, '');
      const write = (name: string) => `echo ${name} > "$PUB_CACHE/${name}" && echo ${name} > ${lock} && echo written`;
      const switched = await run(write('a'), { fetch: true });
      expect(switched.lines).toEqual(['written']);
      expect((await stat(join(cacheDir, 'pub', 'a'))).uid).toBe(DEFAULT_SANDBOX_UID);

      // Without a seccomp filter to refuse nested user namespaces, steps are not switched.
      const asRoot = await createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: LIMITS }, createLogger('silent'), Buffer.alloc(7));
      expect(asRoot.hostUid).toBe(0);
      const again = await run(write('b'), { fetch: true, sandbox: asRoot });
      expect(again.result.status).toBe('SUCCEEDED');
      expect(again.lines).toEqual(['written']);
      expect((await stat(join(cacheDir, 'pub', 'a'))).uid).toBe(0);
      expect((await stat(join(root, 'workspaces', 'project', '.flutter-lockfile'))).uid).toBe(0);
    });

    it('refuses BUILD_SANDBOX_UID where builds would run without the sandbox', async () => {
      const settings = { kind: 'none', allowUnsandboxed: true, limits: LIMITS, stepUser: { uid: DEFAULT_SANDBOX_UID, explicit: true } } as const;
      await expect(createBuildSandbox(settings, createLogger('silent'))).rejects.toThrow(/BUILD_SANDBOX_UID=65520 needs the bwrap sandbox/);
    });

    it('cannot make a user namespace of its own, where it would hold every capability', async () => {
      // Held before by bwrap's --disable-userns; here by the seccomp filter (unshare, clone and clone3).
      const { result, lines } = await run('unshare -U true 2>/dev/null && echo "unshare: made" || echo "unshare: refused"; unshare -Ur id -u 2>/dev/null || echo "root inside: refused"');
      expect(result.status).toBe('SUCCEEDED');
      expect(lines).toEqual(['unshare: refused', 'root inside: refused']);
    });

    it("lets a later step change what the server wrote between rounds, in folders it made, and gives the server's files to the steps' user only", async () => {
      const projects = join(root, 'own-workspaces');
      const made = await createWorkspace({
        root: projects,
        projectId: 'project',
        generationId: 'generation',
        template: { 'src/main.ts': 'export {};\n' },
        parentFiles: [],
        changes: [],
        changesAre: 'this answer',
        owner: sandbox.stepOwner,
      });
      const first = await run('mkdir -p dist && echo built > dist/out.js', { cwd: made.dir });
      expect(first.result.status).toBe('SUCCEEDED');
      // A fix round writes a file in a new folder and one in the folder the step made.
      await applyChanges(made.dir, [
        { type: 'file', path: 'src/fixed/deep/util.ts', content: 'export const fixed = true;\n' },
        { type: 'file', path: 'dist/patched.js', content: 'patched\n' },
      ]);
      // tsc without outDir writes beside the sources; a build may rewrite what the server wrote.
      const second = await run('echo emitted > src/fixed/deep/util.js && echo rewritten > src/fixed/deep/util.ts && echo again > dist/patched.js && echo "$(cat src/main.ts)"', { cwd: made.dir });
      expect(second.result.status).toBe('SUCCEEDED');
      expect(await readFile(join(made.dir, 'src', 'fixed', 'deep', 'util.ts'), 'utf8')).toBe('rewritten\n');
      const owners = await Promise.all(
        ['.', 'src', 'src/main.ts', 'src/fixed', 'src/fixed/deep', 'src/fixed/deep/util.ts', 'src/fixed/deep/util.js', 'dist/patched.js'].map(async (path) => (await lstat(join(made.dir, path))).uid),
      );
      expect(new Set(owners)).toEqual(new Set([DEFAULT_SANDBOX_UID]));
      // The folders around it stay the server's.
      expect([(await stat(join(projects, 'project'))).uid, (await stat(join(projects, 'project'))).mode & 0o777]).toEqual([0, 0o700]);
    });

    it("gives an older Kiln's cache (root's) to the steps' user, never what a link in it points at", async () => {
      // What a fetch run as root left: files, folders, and a link to a file of the host's.
      const hostFile = join(root, 'host-file.txt');
      await writeFile(hostFile, 'the host\'s');
      await mkdir(join(cacheDir, 'npm', '_cacache', 'index'), { recursive: true, mode: 0o700 });
      await writeFile(join(cacheDir, 'npm', '_cacache', 'index', 'entry'), 'cached');
      await symlink(hostFile, join(cacheDir, 'npm', '_cacache', 'planted'));
      await symlink(root, join(cacheDir, 'pub'));
      const { result, lines } = await run('echo more > "$npm_config_cache/_cacache/index/entry" && ls -A "$PUB_CACHE" | wc -l', { fetch: true });
      expect(result.status).toBe('SUCCEEDED');
      // The link in the pub cache's place went; the folder made anew is empty.
      expect(lines).toEqual(['0']);
      expect((await lstat(join(cacheDir, 'npm', '_cacache', 'index'))).uid).toBe(DEFAULT_SANDBOX_UID);
      expect((await lstat(join(cacheDir, 'npm', '_cacache', 'planted'))).uid).toBe(DEFAULT_SANDBOX_UID);
      expect([(await stat(hostFile)).uid, (await stat(root)).uid, (await stat(cacheDir)).uid]).toEqual([0, 0, 0]);
    });
  });

  it('reports a step killed by a signal as killed, as it would be unsandboxed, and an exit code as that code', async () => {
    // bwrap exits with 128 + the signal's number: a crash or the OOM killer is not the tool's verdict (no fix round).
    const killed = await run('kill -SEGV $$');
    expect(killed.result).toMatchObject({ status: 'FAILED', exitCode: null, message: 'killed by SIGSEGV' });
    const exited = await run('exit 3');
    expect(exited.result).toMatchObject({ status: 'FAILED', exitCode: 3, message: 'exited with code 3' });
  });

  it('runs as an unprivileged user with a short allowlisted environment, a private /tmp and HOME', async () => {
    const secrets = { DATABASE_URL: 'postgres://u:secret@db/kiln', HTTPS_PROXY: 'http://proxy.internal:3128', PUB_HOSTED_URL: 'https://pub.internal' };
    const { result, lines } = await run('id -u; echo "HOME=$HOME"; env | cut -d= -f1 | sort | tr "\\n" " "; echo', { env: secrets });

    expect(result.status).toBe('SUCCEEDED');
    expect(lines[0]).toBe('1000');
    expect(lines[1]).toBe('HOME=/tmp/home');
    expect(lines[2]!.trim().split(' ')).toEqual(
      expect.arrayContaining(['PATH', 'HOME', 'TMPDIR', 'npm_config_cache', 'PUB_CACHE']),
    );
    // No server secret, and without network no registry or proxy settings either.
    expect(lines[2]).not.toMatch(/DATABASE_URL|HTTPS_PROXY|PUB_HOSTED_URL/);
  });

  it("gives every step a HOME of its user's own, closed to others, as gpg and ssh want it", async () => {
    for (const fetch of [false, true]) {
      const { result, lines } = await run('stat -c "%u %a" "$HOME" && touch "$HOME/.made" && echo written', { fetch });
      expect(result.status).toBe('SUCCEEDED');
      expect(lines).toEqual(['1000 700', 'written']);
    }
  });

  it('gives the dependency fetch its registry settings, the network and a writable cache, and no other step', async () => {
    const listener: Server = createServer((socket) => socket.end('hello from the host\n'));
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const port = (listener.address() as { port: number }).port;
    const script = [
      `node -e 'require("net").connect(${port}, "127.0.0.1").on("data", (d) => console.log("network: " + d.toString().trim())).on("error", (e) => console.log("network: " + e.code))'`,
      '(echo cached > "$PUB_CACHE/entry") 2>/dev/null && echo "cache: written" || echo "cache: read-only"',
      'echo "registry: ${PUB_HOSTED_URL:-unset}"',
    ].join('\n');
    try {
      const fetch = await run(script, { fetch: true, env: { PUB_HOSTED_URL: 'https://pub.internal' } });
      const later = await run(script, { env: { PUB_HOSTED_URL: 'https://pub.internal' } });

      expect(fetch.lines).toEqual(['network: hello from the host', 'cache: written', 'registry: https://pub.internal']);
      expect(later.lines).toEqual(['network: ECONNREFUSED', 'cache: read-only', 'registry: unset']);
    } finally {
      listener.close();
    }
  });

  it('shows the npm cache only to the dependency fetch, and the pub cache read-only to Flutter steps', async () => {
    // What the fetch got from an address a package named, and a package Flutter builds with.
    await mkdir(join(cacheDir, 'npm', '_cacache'), { recursive: true });
    await mkdir(join(cacheDir, 'pub'), { recursive: true });
    await writeFile(join(cacheDir, 'npm', '_cacache', 'reply'), 'internal secret\n');
    await writeFile(join(cacheDir, 'pub', 'package'), 'a pub package\n');
    const script = [
      `cat ${join(cacheDir, 'npm', '_cacache', 'reply')} 2>/dev/null || echo "npm cache: hidden"`,
      `cat ${join(cacheDir, 'pub', 'package')} 2>/dev/null || echo "pub cache: hidden"`,
      `(echo x > ${join(cacheDir, 'pub', 'planted')}) 2>/dev/null && echo "pub cache: written" || echo "pub cache: read-only"`,
    ].join('\n');

    const fetch = await run(script, { fetch: true });
    const flutterBuild = await run(script);
    const viteBuild = await run(script, { tool: 'npm' });

    expect(fetch.lines).toEqual(['internal secret', 'a pub package', 'pub cache: written']);
    expect(flutterBuild.lines).toEqual(['npm cache: hidden', 'a pub package', 'pub cache: read-only']);
    expect(viteBuild.lines).toEqual(['npm cache: hidden', 'pub cache: hidden', 'pub cache: read-only']);
  });

  it.each([
    ['ends normally', {}],
    ['times out', { timeoutMs: 1_000 }],
    ['is cancelled', { cancel: true }],
  ] as const)('leaves no process behind, a setsid daemon included, when the step %s', async (_, how) => {
    const marker = `kiln-daemon-${randomUUID().slice(0, 8)}`;
    const cancel = new AbortController();
    const script = `setsid sh -c 'while :; do sleep 1; done' ${marker} > /dev/null 2>&1 < /dev/null &\necho started\n${'cancel' in how || 'timeoutMs' in how ? 'sleep 1000' : 'exit 0'}`;
    const { result } = await run(script, {
      ...('timeoutMs' in how ? { timeoutMs: how.timeoutMs } : {}),
      signal: cancel.signal,
      onLine: (line) => {
        if ('cancel' in how && line.text === 'started') cancel.abort('cancelled');
      },
    });

    expect(result.status).toBe('cancel' in how ? 'CANCELLED' : 'timeoutMs' in how ? 'TIMED_OUT' : 'SUCCEEDED');
    expect(await hostProcessesWith(marker)).toEqual([]);
  });

  it("counts what a step writes into Flutter's lock file as workspace, and empties it after the step", async () => {
    // The SDK's lock is the one file outside the workspace a step may write (each project has its own).
    const lock = join(root, 'sdk', 'bin', 'cache', 'lockfile');
    await mkdir(join(root, 'sdk', 'bin', 'cache'));
    await writeFile(lock, '');
    const filled = await run(`head -c ${40 * 1024 * 1024} /dev/zero > ${lock} && head -c ${30 * 1024 * 1024} /dev/zero > big && echo written`);
    expect(filled.lines).toContain('written');
    expect(filled.result.status).toBe('FAILED');
    expect(filled.result.message).toMatch(/wrote more than 64 MB to its workspace/);
    // What it wrote there went with the step.
    expect((await stat(join(root, 'workspaces', 'project', '.flutter-lockfile'))).size).toBe(0);

    const next = await run(`wc -c < ${lock}`);
    expect(next.result.status).toBe('SUCCEEDED');
    expect(next.lines).toEqual(['0']);
  });

  it('counts files the step deleted but holds open against the workspace limit', async () => {
    // 2 × 40 MB, each under the per-file limit, out of du's sight once deleted; the step would wait out its timeout.
    const held = await run(`exec 3>a 4>b; head -c ${40 * 1024 * 1024} /dev/zero >&3; head -c ${40 * 1024 * 1024} /dev/zero >&4; rm a b; echo held; sleep 600`, {
      timeoutMs: 120_000,
    });
    expect(held.lines).toContain('held');
    expect(held.result.status).toBe('FAILED');
    expect(held.result.message).toMatch(/wrote more than 64 MB to its workspace/);
  }, 150_000);

  it.skipIf(!hasPython || !mapFilesReadable)(`counts files the step deleted but still maps against the workspace limit${mapFilesWhy}`, async () => {
    // Written, one page mapped, closed and deleted: no descriptor left, only the mapping holds each 40 MB.
    // libc's mmap itself: Python's mmap keeps a descriptor of its own.
    const script = [
      'import ctypes, os, time',
      'libc = ctypes.CDLL(None)',
      'libc.mmap.restype = ctypes.c_void_p',
      'libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]',
      'for i in range(2):',
      '    with open(f"m{i}", "wb") as f: f.write(b"x" * (40 << 20))',
      '    fd = os.open(f"m{i}", os.O_RDONLY)',
      '    assert libc.mmap(None, 4096, 1, 1, fd, 0) != ctypes.c_void_p(-1).value',
      '    os.close(fd)',
      '    os.unlink(f"m{i}")',
      'links = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]',
      'print("held, open:", sum("deleted" in link for link in links), flush=True)',
      'time.sleep(600)',
    ].join('\n');
    const held = await run(`exec python3 -c '${script}'`, { timeoutMs: 120_000 });
    expect(held.lines).toContain('held, open: 0');
    expect(held.result.status).toBe('FAILED');
    expect(held.result.message).toMatch(/wrote more than 64 MB to its workspace/);
  }, 150_000);

  it("stops a step once the workspaces' disk has less free space than BUILD_MIN_FREE_DISK_MB, whoever took it", async () => {
    // A floor above what this disk has free: what a socket's queue holds of deleted files no /proc look can count.
    const floored = await createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: { ...LIMITS, minFreeDiskMb: 1024 ** 3 } }, createLogger('silent'));
    const stopped = await run('echo started; sleep 600', { sandbox: floored, timeoutMs: 120_000 });
    expect(stopped.lines).toContain('started');
    expect(stopped.result.status).toBe('FAILED');
    expect(stopped.result.message).toMatch(/The server's disk had less than 1073741824 MB free \(BUILD_MIN_FREE_DISK_MB\), so the build was stopped\./);
    // Without a floor, the same step runs to its end.
    expect((await run('echo started')).result.status).toBe('SUCCEEDED');
  }, 150_000);

  it('runs every process of a step nicer than the server, and a step cannot take that back', async () => {
    // Field 19 of /proc/<pid>/stat: the niceness of the shell and of a process it starts.
    const { result, lines } = await run('cut -d" " -f19 /proc/self/stat; sh -c \'cut -d" " -f19 /proc/$$/stat\'; renice -n 0 -p $$ >/dev/null 2>&1 && echo raised || echo kept');
    expect(result.status).toBe('SUCCEEDED');
    // nice adds to the server's own niceness, up to 19.
    const niceness = String(Math.min(19, getPriority() + STEP_NICENESS));
    expect(lines).toEqual([niceness, niceness, 'kept']);
  });

  it('gives every process of a step its own limit of open files, not the server\'s', async () => {
    const { result, lines } = await run('ulimit -Sn; ulimit -Hn');
    expect(result.status).toBe('SUCCEEDED');
    expect(lines).toEqual(['4096', '4096']);
  });

  it.skipIf(!hasPerl)('refuses the ioctls that reserve disk space without growing a file (FS_IOC_RESVSP64 and its kin)', async () => {
    // 1 GB each, in a file whose size stays 0: RLIMIT_FSIZE never sees it, the disk does.
    const reserve = (file: string) =>
      `perl -e 'for my $cmd (0x4030582a, 0x40305828, 0x40305839, 0x402c582a) { open(my $f, ">", "${file}") or die "$!"; ` +
      `my $resv = pack("s s x4 q q x24", 0, 0, 0, 1 << 30); printf("%x %s\\n", $cmd, ioctl($f, $cmd, $resv) ? "reached" : "blocked ($!)"); close($f); unlink("${file}") }'`;
    // The control: outside the sandbox the same ioctl reserves the space (a filesystem that supports fallocate).
    const control = spawnSync('sh', ['-c', reserve('control.bin').replace('unlink(', 'print(-s "control.bin", " ", (stat("control.bin"))[12] * 512, "\\n"); unlink(')], { cwd: workspace, encoding: 'utf8' });
    const controlLines = control.stdout.split('\n');
    expect(controlLines[0]).toBe('4030582a reached');
    const [size, allocated] = controlLines[1]!.split(' ').map(Number);
    expect([size, allocated! >= 1 << 30]).toEqual([0, true]);

    const { result, lines } = await run(`${reserve('reserved.bin')}; touch reserved.bin; du -B1 reserved.bin | cut -f1`);
    expect(result.status).toBe('SUCCEEDED');
    const blocked = '(Operation not supported)';
    expect(lines).toEqual([`4030582a blocked ${blocked}`, `40305828 blocked ${blocked}`, `40305839 blocked ${blocked}`, `402c582a blocked ${blocked}`, '0']);
    expect((await stat(join(workspace, 'reserved.bin'))).blocks).toBe(0);
  });

  it.each([
    ['a build step', false],
    ['the dependency fetch', true],
  ] as const)("leaves the host's kernel settings and every other host-wide file of /proc read-only to %s", async (_, fetch) => {
    // The sandbox's uid is the server's (root here), the owner of /proc/sys: kernel.core_pattern
    // written there ran a program on the host as root. The value read is written back, so a
    // write that got through changes nothing.
    const script = [
      'f=/proc/sys/kernel/printk_ratelimit_burst; (cat $f > /tmp/v && cat /tmp/v > $f) 2>/dev/null && echo "sysctl: written" || echo "sysctl: refused"',
      // The processes' own folders are the sandbox's; anything else writable is the host's.
      "find /proc -path '/proc/[0-9]*' -prune -o -writable -print 2>/dev/null | sed 's/^/writable: /'",
      'echo swept',
    ].join('\n');
    const { result, lines } = await run(script, { fetch });

    expect(result.status).toBe('SUCCEEDED');
    expect(lines).toEqual(['sysctl: refused', 'swept']);
  });

  it('keeps /dev read-only, with its devices and /dev/shm working', async () => {
    // Without a cgroup, a tmpfs of no size would hold any amount of the host's memory, outside every resident-memory count.
    const script = [
      '(echo x > /dev/planted) 2>/dev/null && echo "dev: written" || echo "dev: refused"',
      'echo x > /dev/null && head -c 3 /dev/zero | wc -c',
      'echo shared > /dev/shm/file && cat /dev/shm/file',
      'ls /dev/pts',
    ].join('\n');
    const { result, lines } = await run(script);

    expect(result.status).toBe('SUCCEEDED');
    expect(lines).toEqual(['dev: refused', '3', 'shared', 'ptmx']);
  });

  it('refuses setuid and setgid modes however a step sets them, and other modes as before', async () => {
    // The files a root server's step writes were the host's root's (they still are where its steps
    // cannot run as BUILD_SANDBOX_UID): a setuid one, in a folder the step opened to everyone, would
    // give any local user root.
    const chmods = [
      'touch plain setuid setgid && chmod 755 plain && echo "755: set"',
      '(chmod 4755 setuid 2>/dev/null && echo "4755: set" || echo "4755: refused")',
      '(chmod g+s setgid 2>/dev/null && echo "g+s: set" || echo "g+s: refused")',
    ];
    // chmod(2) itself, and a file or folder created with the bits (open with O_CREAT, mkdir).
    const perl = hasPerl
      ? [
          `perl -e 'print chmod(06755, "plain") ? "chmod(2): set\\n" : "chmod(2): refused ($!)\\n"'`,
          `perl -MFcntl -e 'print sysopen(my $f, "created", O_CREAT | O_WRONLY, 04755) ? "open: created\\n" : "open: refused ($!)\\n"'`,
          `perl -e 'print mkdir("folder", 02755) ? "mkdir: made\\n" : "mkdir: refused ($!)\\n"'`,
        ]
      : [];
    const { result, lines } = await run([...chmods, ...perl, 'chmod 700 . && echo "own folder: 700"'].join('\n'));

    expect(result.status).toBe('SUCCEEDED');
    const denied = '(Operation not permitted)';
    expect(lines).toEqual([
      '755: set',
      '4755: refused',
      'g+s: refused',
      ...(hasPerl ? [`chmod(2): refused ${denied}`, `open: refused ${denied}`, `mkdir: refused ${denied}`] : []),
      'own folder: 700',
    ]);
    const mode = async (name: string) => (await stat(join(workspace, name))).mode & 0o7777;
    expect([await mode('plain'), (await mode('setuid')) & 0o6000, (await mode('setgid')) & 0o6000]).toEqual([0o755, 0, 0]);
    if (hasPerl) {
      expect(existsSync(join(workspace, 'created'))).toBe(false);
      expect(existsSync(join(workspace, 'folder'))).toBe(false);
    }
  });

  it("makes the project's caches no one else's: the server's folder, the steps' caches in it", async () => {
    const { result } = await run('true');
    expect(result.status).toBe('SUCCEEDED');
    const modes = await Promise.all([cacheDir, join(cacheDir, 'npm'), join(cacheDir, 'pub')].map(async (dir) => (await stat(dir)).mode & 0o777));
    expect(modes).toEqual([0o700, 0o700, 0o700]);
    const steps = sandbox.stepOwner?.uid ?? process.getuid!();
    expect(await Promise.all([cacheDir, join(cacheDir, 'npm'), join(cacheDir, 'pub')].map(async (dir) => (await stat(dir)).uid))).toEqual([process.getuid!(), steps, steps]);
  });

  it('shows neither the host /tmp nor the folders around the workspace', async () => {
    await writeFile(join(root, 'workspaces', 'project', 'other-generation-file.txt'), 'another generation');
    await writeFile(join(root, 'host-file.txt'), 'the host /tmp');
    const { lines } = await run(`ls ${join(root, 'workspaces', 'project')}; ls ${root}; touch ../escaped /tmp/escaped 2>/dev/null`);

    // Only the folders that lead to what is mounted (the workspace, the tool), in the private /tmp.
    expect(lines).toEqual(['generation', 'sdk', 'workspaces']);
    expect(existsSync(join(root, 'workspaces', 'project', 'escaped'))).toBe(false);
    expect(existsSync('/tmp/escaped')).toBe(false);
  });

  async function sandboxHiding(hiddenDirs: SandboxSettings['hiddenDirs']): Promise<BuildSandbox> {
    return createBuildSandbox({ kind: 'bwrap', allowUnsandboxed: false, limits: LIMITS, hiddenDirs }, createLogger('silent'));
  }

  it('hides DATA_DIR where a read-only system folder holds it, and the workspace still works', async () => {
    // Kiln installed as /usr/src/app puts DATA_DIR inside the read-only /usr. Nothing here may
    // write under /usr, so /usr/share, which holds files on every host, stands in for it.
    const dataDir = '/usr/share';
    expect((await readdir(dataDir)).length).toBeGreaterThan(0);
    const script = `ls -A ${dataDir} | wc -l; (touch ${dataDir}/planted) 2>/dev/null && echo "mask: writable" || echo "mask: read-only"; echo made > made.txt && cat made.txt`;
    const { result, lines } = await run(script, { sandbox: await sandboxHiding({ DATA_DIR: dataDir }) });

    expect(result.status).toBe('SUCCEEDED');
    expect(lines).toEqual(['0', 'mask: read-only', 'made']);
    expect(await readFile(join(workspace, 'made.txt'), 'utf8')).toBe('made\n');
  });

  // Debian's npm (/usr/share/nodejs/npm) finds its dependencies beside it, outside its own folder.
  it.skipIf(!npmRoot?.startsWith('/usr/') || basename(dirname(npmRoot)) !== 'node_modules')("shows a step its own toolchain inside a hidden folder, and nothing else of that folder", async () => {
    // The folder around npm's package (/usr/lib/node_modules) stands in for a hidden folder that holds the tool.
    const hidden = dirname(npmRoot!);
    const { result, lines } = await run('', { tool: 'npm', command: ['npm', 'exec', '--call', `ls -A ${hidden}`], sandbox: await sandboxHiding({ DATA_DIR: hidden }) });

    expect(result.status).toBe('SUCCEEDED');
    expect(lines).toEqual([basename(npmRoot!)]);
  });

  it.skipIf(!usrWritable)('runs a step in its workspace when Kiln lives in /usr, and shows nothing else of the folders it hides', async () => {
    // Kiln as /usr/src/app, with DATA_DIR inside it and an SDK of its own holding a hidden folder;
    // a scratch folder under /usr/local/share stands in for it.
    const app = await mkdtemp(join(USR_SCRATCH, 'kiln-app-'));
    try {
      const dataDir = join(app, '.kiln');
      const own = join(dataDir, 'workspaces', 'project', 'generation');
      await mkdir(own, { recursive: true });
      await giveToSteps(own);
      await mkdir(join(dataDir, 'workspaces', 'other', 'generation'), { recursive: true });
      await writeFile(join(dataDir, 'encryption.key'), 'the server key');
      const sdk = join(app, 'sdk');
      await mkdir(join(sdk, 'bin'), { recursive: true });
      await mkdir(join(sdk, 'secrets'));
      await writeFile(join(sdk, 'secrets', 'token'), 'the sdk token');
      await writeFile(join(sdk, 'bin', 'tool'), '#!/bin/sh\nexec sh -c "$1"\n');
      await chmod(join(sdk, 'bin', 'tool'), 0o755);
      const hiding = await sandboxHiding({ APP: app, DATA_DIR: dataDir, SDK_SECRETS: join(sdk, 'secrets') });

      // /bin/sh's toolchain folder is /usr, which holds the workspace: the masks leave it only the step's own.
      const script = `ls -A ${dataDir}; ls ${join(dataDir, 'workspaces')}; cat ${join(dataDir, 'encryption.key')} 2>/dev/null || echo no key; echo made > made.txt && cat made.txt`;
      const system = await run('', { tool: 'npm', cwd: own, command: ['/bin/sh', '-c', script], sandbox: hiding });
      expect(system.result.status).toBe('SUCCEEDED');
      expect(system.lines).toEqual(['workspaces', 'project', 'no key', 'made']);

      // The SDK inside the masked app is shown again, and the hidden folder inside it hidden again.
      const sdkScript = `ls ${sdk}; ls -A ${join(sdk, 'secrets')}; cat ${join(sdk, 'secrets', 'token')} 2>/dev/null || echo no token`;
      const ownSdk = await run('', { cwd: own, command: [join(sdk, 'bin', 'tool'), sdkScript], sandbox: hiding });
      expect(ownSdk.result.status).toBe('SUCCEEDED');
      expect(ownSdk.lines).toEqual(['bin', 'secrets', 'no token']);
    } finally {
      await rm(app, { recursive: true, force: true });
    }
  });

  it('refuses a toolchain folder that holds DATA_DIR, and the step never runs', async () => {
    const dataDir = join(root, 'sdk', 'data');
    await mkdir(dataDir);
    await writeFile(join(dataDir, 'encryption.key'), 'the server key');
    const { result, lines } = await run(`cat ${join(dataDir, 'encryption.key')}`, { sandbox: await sandboxHiding({ DATA_DIR: dataDir }) });

    expect(result.status).toBe('FAILED');
    expect(result.message).toMatch(new RegExp(`${join(root, 'sdk')}, which every build step sees read-only, contains DATA_DIR`));
    expect(lines).toEqual([]);
  });
});

describe("the folders around a build's workspace", () => {
  it("are the server's alone: no other user reaches a file a build wrote, whatever it did to its own folder", async () => {
    const root = await mkdtemp(join(tmpdir(), 'kiln-workspace-modes-'));
    try {
      const workspaces = join(root, 'data', 'workspaces');
      // A project's folder made by an older Kiln, open to everyone, is tightened.
      await mkdir(join(workspaces, 'older'), { recursive: true, mode: 0o755 });
      await chmod(join(workspaces, 'older'), 0o755);
      await chmod(workspaces, 0o751);
      const input = { template: { 'a.txt': 'a\n' }, parentFiles: [], changes: [], changesAre: 'this answer' as const };
      const made = await createWorkspace({ ...input, root: join(root, 'fresh', 'workspaces'), projectId: 'project', generationId: 'generation' });
      const older = await createWorkspace({ ...input, root: workspaces, projectId: 'older', generationId: 'generation' });

      const mode = async (dir: string) => (await stat(dir)).mode & 0o777;
      expect(await Promise.all([join(root, 'fresh'), join(root, 'fresh', 'workspaces'), dirname(made.dir), made.dir].map(mode))).toEqual([0o700, 0o700, 0o700, 0o700]);
      // WORKSPACES_DIR that exists keeps the operator's mode; the project's folder is Kiln's.
      expect(await Promise.all([workspaces, dirname(older.dir), older.dir].map(mode))).toEqual([0o751, 0o700, 0o700]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

/** The package folder of the npm on PATH, as the sandbox finds it. */
async function realNpmRoot(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const real = await realpath(join(dir, 'npm')).catch(() => undefined);
    if (real) return toolchainRoot(real);
  }
  return undefined;
}

describe(`configuring the build sandbox (${databaseKind})`, () => {
  const production = {
    NODE_ENV: 'production',
    AUTH_JWT_SECRET: 'Qm9vdHN0cmFwLXNlY3JldC1mb3ItdGVzdHMtb25seS0xMjM0NTY3ODkw',
    KILN_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'),
    METRICS_TOKEN: 'Qm9vdHN0cmFwLXNlY3JldC1mb3ItdGVzdHMtb25seS0xMjM0NTY3ODkw',
  };

  it('refuses BUILD_SANDBOX=none in production unless ALLOW_UNSANDBOXED_BUILDS=true', () => {
    expect(() => parseConfig({ ...production, BUILD_SANDBOX: 'none' })).toThrow(/NODE_ENV=production refuses BUILD_SANDBOX=none/);
    expect(() => parseConfig({ ...production, BUILD_SANDBOX: 'none', ALLOW_UNSANDBOXED_BUILDS: 'true' })).not.toThrow();
    expect(() => parseConfig({ BUILD_SANDBOX: 'chroot' })).toThrow(/BUILD_SANDBOX/);
  });

  it('warns at start when builds run unsandboxed, and /ready says so', async () => {
    const server = await startCapturedServer({ BUILD_SANDBOX: 'none', LOG_LEVEL: 'info' });
    try {
      expect(server.logs.records().some((r) => r.level === 40 && String(r.msg).includes('WITHOUT a sandbox'))).toBe(true);
      const ready = await fetch(`${server.url}/ready`);
      expect(await ready.json()).toMatchObject({ ready: true, sandbox: { kind: 'none' } });
    } finally {
      await server.stop();
    }
  });

  it.skipIf(bwrapProblem !== undefined)(`reports bwrap on /ready when it works here${why}`, async () => {
    const server = await startCapturedServer({ BUILD_SANDBOX: 'bwrap', LOG_LEVEL: 'info' });
    try {
      const ready = await fetch(`${server.url}/ready`);
      // hostUid: who a step's processes and files are on the host (a root server's steps are never root).
      expect(await ready.json()).toMatchObject({ ready: true, sandbox: { kind: 'bwrap', limits: expect.any(String), hostUid: rootServer ? DEFAULT_SANDBOX_UID : process.getuid!() } });
      expect(server.logs.records().some((r) => r.level === 40)).toBe(false);
    } finally {
      await server.stop();
    }
  });
});

describe(`tool-steering files in the model's answer (${databaseKind})`, () => {
  const suite = useGeminiServer();

  it.each(['.npmrc', 'sub/.yarnrc.yml', '.pnpmfile.cjs', '.env.local'])('refuses %s as UNSAFE_OUTPUT', async (path) => {
    const project = await createProject(suite.owner.client, { target: 'WEB' });
    suite.gemini.script({ kind: 'stream', chunks: [`<file path="${path}">\nregistry=https://evil.example/\n</file>\n`], usage: { promptTokens: 1, outputTokens: 1 } });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'steer npm' });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation.status).toBe('FAILED');
    expect(generation.error?.code).toBe('UNSAFE_OUTPUT');
    expect(generation.error?.message).toContain('steers the build tools');
  });
});
