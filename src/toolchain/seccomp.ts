// The seccomp filter of every sandboxed build step (bwrap --seccomp): system calls that get
// around the disk limits fail.
// - fallocate() fails with EOPNOTSUPP. RLIMIT_FSIZE does not bound an allocation that keeps
//   a file's size (FALLOC_FL_KEEP_SIZE): a build reserved gigabytes of disk in milliseconds,
//   far faster than the workspace's disk watch looks. On EOPNOTSUPP glibc's posix_fallocate
//   writes the blocks instead, which the limits do see.
// - io_uring fails with ENOSYS: its operations (a fallocate among them) never pass seccomp.
//   Programs that use it (libuv, so Node) fall back to ordinary system calls.

const EOPNOTSUPP = 95;
const ENOSYS = 38;

/** Per Node architecture, the kernel ABIs a process may use, with each refused call's number there. */
const ABIS: Record<string, { auditArch: number; refused: { syscall: number; errno: number }[] }[]> = {
  // x86_64 (and its x32 numbers, bit 30 set), and i386 binaries.
  x64: [
    { auditArch: 0xc000003e, refused: [...both([285, 425, 426, 427]), ...both([285, 425, 426, 427].map((syscall) => 0x40000000 | syscall))] },
    { auditArch: 0x40000003, refused: both([324, 425, 426, 427]) },
  ],
  // aarch64, and 32-bit ARM (EABI) binaries.
  arm64: [
    { auditArch: 0xc00000b7, refused: both([47, 425, 426, 427]) },
    { auditArch: 0x40000028, refused: both([352, 425, 426, 427]) },
  ],
};

/** [fallocate, io_uring_setup, io_uring_enter, io_uring_register] with their errors. */
function both([fallocate, ...ioUring]: number[]) {
  return [{ syscall: fallocate!, errno: EOPNOTSUPP }, ...ioUring.map((syscall) => ({ syscall, errno: ENOSYS }))];
}

const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_RET_K = 0x06;
/** Offsets in struct seccomp_data. */
const SYSCALL_NR = 0;
const ARCH = 4;
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;

type Instruction = [code: number, jumpIfTrue: number, jumpIfFalse: number, k: number];

/** The filter as classic BPF (struct sock_filter[], little-endian like both architectures); undefined on one not listed. */
export function buildStepFilter(arch: string = process.arch): Buffer | undefined {
  const abis = ABIS[arch];
  if (!abis) return undefined;
  // Per ABI: skip the block unless the arch matches; then each refused number jumps to the
  // return of its error, the last instructions of the program.
  const errnos = [...new Set(abis.flatMap(({ refused }) => refused.map(({ errno }) => errno)))];
  const program: (Instruction | { refuse: { syscall: number; errno: number } })[] = [];
  for (const { auditArch, refused } of abis) {
    program.push([BPF_LD_W_ABS, 0, 0, ARCH], [BPF_JEQ_K, 0, refused.length + 2, auditArch], [BPF_LD_W_ABS, 0, 0, SYSCALL_NR]);
    program.push(...refused.map((refuse) => ({ refuse })), [BPF_RET_K, 0, 0, RET_ALLOW]);
  }
  program.push([BPF_RET_K, 0, 0, RET_ALLOW], ...errnos.map((errno): Instruction => [BPF_RET_K, 0, 0, RET_ERRNO | errno]));
  const returnOf = (errno: number) => program.length - errnos.length + errnos.indexOf(errno);
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach((step, index) => {
    const [code, jt, jf, k] = Array.isArray(step) ? step : [BPF_JEQ_K, returnOf(step.refuse.errno) - index - 1, 0, step.refuse.syscall];
    bytes.writeUInt16LE(code, index * 8);
    bytes.writeUInt8(jt, index * 8 + 2);
    bytes.writeUInt8(jf, index * 8 + 3);
    bytes.writeUInt32LE(k, index * 8 + 4);
  });
  return bytes;
}
