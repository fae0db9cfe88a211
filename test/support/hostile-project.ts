import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { useStarted } from './lifecycle.js';

// Projects a model could be steered into writing, for the build-sandbox suites: shell
// probes that print into the build log what they reached, run as project code by each
// target (WEB: its vite.config.js, which vite runs, here the fake npm's vite so no registry
// is needed; FLUTTER: a build hook, as Dart runs hook/build.dart).

export type ProbeKind = 'reach' | 'fork-bomb' | 'memory-hog' | 'disk-filler' | 'file-spray' | 'honest';

export interface ProbeTargets {
  /** The server's own pid (host pid namespace). */
  serverPid: number;
  dataDir: string;
  repoRoot: string;
  apiPort: number;
  /** Names the files and processes a probe leaves, so the host can look for them. */
  marker: string;
}

const tcpProbe = `const [port] = process.argv.slice(1);
const say = (what) => { console.log('PROBE tcp-' + port + ': ' + what); process.exit(0); };
const socket = require('node:net').connect(Number(port), '127.0.0.1');
socket.on('connect', () => say('REACHED'));
socket.on('error', (error) => say('blocked (' + error.code + ')'));
setTimeout(() => say('blocked (timeout)'), 3000);`;

const internetProbe = `require('node:dns').lookup('registry.npmjs.org', (error, address) =>
  console.log('PROBE internet: ' + (error ? 'blocked (' + error.code + ')' : 'REACHED ' + address)));`;

/** The shell script of each kind of probe. */
export function probeScript(kind: ProbeKind, t: ProbeTargets): string {
  switch (kind) {
    case 'honest':
      return 'echo "hook: nothing to generate"\n';
    case 'fork-bomb':
      // Held open: a script that ended at once would have its bomb torn down with the
      // sandbox, below the limit or not depending on how busy the machine was.
      return 'echo "PROBE fork-bomb: starting"\nbomb() { bomb | bomb & }\nbomb\nsleep 600\n';
    case 'memory-hog':
      return `echo "PROBE memory-hog: allocating 8 GB"
node -e 'const held = []; for (let mb = 64; mb <= 8192; mb += 64) { held.push(Buffer.alloc(64 << 20, 1)); if (mb % 1024 === 0) console.log("allocated " + mb + " MB"); } console.log("PROBE memory-hog: REACHED 8 GB")'
`;
    case 'disk-filler':
      return `echo "PROBE disk-filler: writing 10 GB"
head -c 10737418240 /dev/zero > filler.bin
echo "PROBE disk-filler: wrote $(wc -c < filler.bin) bytes"
`;
    case 'file-spray':
      return `echo "PROBE file-spray: making empty files, a thousand at a time"
mkdir spray && cd spray || exit 1
i=0
while :; do touch $(seq -f "f$i-%g" 1000); i=$((i + 1)); done
`;
    case 'reach':
      return `say() { echo "PROBE $1: $2"; }
# The server's PATH (npm scripts) starts with the repository's node_modules/.bin.
hits=$(grep -lF '${t.repoRoot}/node_modules/.bin' /proc/[0-9]*/environ 2>/dev/null | wc -l)
if [ "$hits" -gt 0 ]; then say environ "REACHED $hits environments of the server's kind"; else say environ "blocked"; fi
if tr '\\0' ' ' < /proc/${t.serverPid}/cmdline 2>/dev/null | grep -q node; then say processes "REACHED the server (pid ${t.serverPid})"; else say processes "blocked ($(ls -d /proc/[0-9]* | wc -l) processes visible)"; fi
# Anything of DATA_DIR but this project's own folder (its workspace and caches).
found=$(find '${t.dataDir}' -type f 2>/dev/null | grep -v "^$(dirname "$PWD")/" | head -3 | tr '\\n' ' ')
if [ -n "$found" ]; then say data-dir "REACHED $found"; else say data-dir "blocked"; fi
if [ -r '${t.repoRoot}/package.json' ] || [ -r '${t.repoRoot}/src/main.ts' ]; then say source "REACHED"; else say source "blocked"; fi
modules=$(ls '${t.repoRoot}/node_modules' 2>/dev/null | wc -l)
if [ "$modules" -gt 1 ]; then say server-node-modules "REACHED $modules packages"; else say server-node-modules "blocked"; fi
for port in 5432 6379 ${t.apiPort}; do node -e '${tcpProbe.replaceAll("'", `'"'"'`)}' "$port" 2>&1 || say "tcp-$port" "blocked (no node)"; done
node -e '${internetProbe.replaceAll("'", `'"'"'`)}' 2>&1
if (echo pwned > /tmp/kiln-hostile-${t.marker}) 2>/dev/null; then say host-tmp "wrote /tmp/kiln-hostile-${t.marker}"; else say host-tmp "blocked"; fi
if (echo pwned > '${t.repoRoot}/src/hostile-${t.marker}.ts') 2>/dev/null; then say server-source-write "REACHED"; else say server-source-write "blocked"; fi
if (echo pwned > '${t.repoRoot}/node_modules/node/hostile-${t.marker}') 2>/dev/null; then say server-node-modules-write "REACHED"; else say server-node-modules-write "blocked"; fi
# Disk reserved without writing it (FALLOC_FL_KEEP_SIZE), which RLIMIT_FSIZE does not bound.
: > reserved.bin
if fallocate -n -l 64M reserved.bin 2>/dev/null; then say disk-reserve "REACHED $(du -B1 reserved.bin | cut -f1) bytes"; else say disk-reserve "blocked"; fi
rm -f reserved.bin
# io_uring, whose operations (a fallocate among them) no seccomp filter sees: io_uring_setup(8 entries).
say io-uring "$(perl -e 'my $params = "\\0" x 120; print syscall(425, 8, $params) >= 0 ? "REACHED" : "blocked ($!)"' 2>&1 || echo 'blocked (no perl)')"
setsid sh -c 'while :; do sleep 1; done' kiln-daemon-${t.marker} > /dev/null 2>&1 < /dev/null &
say daemon "started kiln-daemon-${t.marker}"
`;
  }
}

/** The model's answer: `<file>` blocks that make the project run `kind` as project code. */
export function hostileAnswer(target: 'WEB' | 'FLUTTER', kind: ProbeKind, t: ProbeTargets): string {
  const files: Record<string, string> =
    target === 'WEB'
      ? {
          'package.json': `${JSON.stringify(
            {
              name: 'kiln-app',
              private: true,
              version: '0.0.0',
              // Would run with network if install scripts ran.
              scripts: { postinstall: 'sh probes.sh' },
            },
            null,
            2,
          )}\n`,
          // Not a bin in node_modules: the dependency fetch removes node_modules before it installs.
          'vite.config.js': `require('node:child_process').execFileSync('sh', ['probes.sh'], { stdio: 'inherit' });
module.exports = {};
`,
          'probes.sh': probeScript(kind, t),
        }
      : {
          'lib/main.dart': "import 'package:flutter/material.dart';\n\nvoid main() => runApp(const Placeholder());\n",
          'hook/build.sh': probeScript(kind, t),
        };
  const blocks = Object.entries(files).map(([path, content]) => `<file path="${path}">\n${content}</file>`);
  return `Here is the app.\n${blocks.join('\n')}\n`;
}

/** Lines `PROBE name: result` of a build log, as { name: result }. */
export function probeResults(lines: { text: string }[]): Record<string, string> {
  const results: Record<string, string> = {};
  for (const { text } of lines) {
    const match = /^PROBE ([\w-]+): (.*)$/.exec(text);
    if (match) results[match[1]!] = match[2]!;
  }
  return results;
}

/** Host processes whose command line holds `text`. */
export async function hostProcessesWith(text: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) pids.push(Number(entry));
  }
  return pids;
}

interface FakeSdk {
  /** `<sdk>/bin/<tool>`, so the sandbox shows the SDK root and nothing else. */
  bin: string;
  remove(): Promise<void>;
}

export interface SdkFakes {
  /** FLUTTER_BIN and NPM_BIN for Kiln. */
  kilnEnv: { FLUTTER_BIN: string; NPM_BIN: string };
  stop(): Promise<void>;
}

/**
 * The fake flutter and the fake npm (test/fixtures/bin/) laid out as SDKs
 * (`<root>/bin/<tool>`) for the suite, removed after it: inside the sandbox only the SDK
 * root of FLUTTER_BIN (or NPM_BIN) is visible, so the fakes cannot live in the repository.
 */
export function useSdkFakes(): SdkFakes {
  return useStarted(async () => {
    const flutter = await sdkFake('flutter');
    const npm = await sdkFake('npm').catch(async (error: unknown) => {
      await flutter.remove();
      throw error;
    });
    return {
      kilnEnv: { FLUTTER_BIN: flutter.bin, NPM_BIN: npm.bin },
      stop: async () => {
        await flutter.remove();
        await npm.remove();
      },
    };
  });
}

async function sdkFake(tool: 'flutter' | 'npm'): Promise<FakeSdk> {
  const root = await mkdtemp(join(tmpdir(), `kiln-${tool}-sdk-`));
  // As an SDK is installed: open to every user (a root server's build steps run as another).
  await chmod(root, 0o755);
  await mkdir(join(root, 'bin'));
  const bin = join(root, 'bin', tool);
  await copyFile(fileURLToPath(new URL(`../fixtures/bin/${tool}`, import.meta.url)), bin);
  await chmod(bin, 0o755);
  return { bin, remove: () => rm(root, { recursive: true, force: true }) };
}
