// The seccomp filter of every sandboxed build step (bwrap --seccomp): system calls that get
// around the disk limits fail.
// - fallocate() fails with EOPNOTSUPP. RLIMIT_FSIZE does not bound an allocation that keeps
//   a file's size (FALLOC_FL_KEEP_SIZE): a build reserved gigabytes of disk in milliseconds,
//   far faster than the workspace's disk watch looks. On EOPNOTSUPP glibc's posix_fallocate
//   writes the blocks instead, which the limits do see.
// - The ioctls the kernel turns into that same fallocate on any filesystem
//   (FS_IOC_RESVSP, FS_IOC_RESVSP64, FS_IOC_ZERO_RANGE, with their 32-bit struct forms)
//   fail with EOPNOTSUPP too: ioctl(FS_IOC_RESVSP64) reserved 2 GB of the workspace at
//   once, in a file whose size stayed 0. Other ioctls pass (terminals need them); only the
//   command's low 32 bits are compared, all the kernel reads of it.
// - io_uring fails with ENOSYS: its operations (a fallocate among them) never pass seccomp.
//   Programs that use it (libuv, so Node) fall back to ordinary system calls.

const EOPNOTSUPP = 95;
const ENOSYS = 38;

/** ioctl commands that allocate disk space without growing the file: _IOW('X', n, struct space_resv), 48 bytes or 44 (i386). */
const REFUSED_IOCTLS = [0x28, 0x2a, 0x39].flatMap((n) => [0x40305800 | n, 0x402c5800 | n]);

interface Abi {
  auditArch: number;
  refused: { syscall: number; errno: number }[];
  /** Its ioctl numbers, whose command is checked against REFUSED_IOCTLS. */
  ioctl: number[];
}

const X32 = 0x40000000;

/** Per Node architecture, the kernel ABIs a process may use, with each refused call's number there. */
const ABIS: Record<string, Abi[]> = {
  // x86_64 (and its x32 numbers, bit 30 set; x32's own ioctl is 514), and i386 binaries.
  x64: [
    { auditArch: 0xc000003e, refused: [...both([285, 425, 426, 427]), ...both([285, 425, 426, 427].map((syscall) => X32 | syscall))], ioctl: [16, X32 | 16, X32 | 514] },
    { auditArch: 0x40000003, refused: both([324, 425, 426, 427]), ioctl: [54] },
  ],
  // aarch64, and 32-bit ARM (EABI) binaries.
  arm64: [
    { auditArch: 0xc00000b7, refused: both([47, 425, 426, 427]), ioctl: [29] },
    { auditArch: 0x40000028, refused: both([352, 425, 426, 427]), ioctl: [54] },
  ],
};

/** [fallocate, io_uring_setup, io_uring_enter, io_uring_register] with their errors. */
function both([fallocate, ...ioUring]: number[]) {
  return [{ syscall: fallocate!, errno: EOPNOTSUPP }, ...ioUring.map((syscall) => ({ syscall, errno: ENOSYS }))];
}

const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_RET_K = 0x06;
/** Offsets in struct seccomp_data: the call's number, its ABI, and the low word of its second argument (little-endian). */
const SYSCALL_NR = 0;
const ARCH = 4;
const ARG1_LOW = 24;
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;

type Instruction = [code: number, jumpIfTrue: number, jumpIfFalse: number, k: number];
/** Jumps to `label` when the accumulator is `k`, else goes on. */
type JumpIf = { k: number; label: string };

/** The filter as classic BPF (struct sock_filter[], little-endian like both architectures); undefined on one not listed. */
export function buildStepFilter(arch: string = process.arch): Buffer | undefined {
  const abis = ABIS[arch];
  if (!abis) return undefined;
  // Per ABI: skip the block unless the arch matches; then each refused number jumps to the
  // return of its error, and ioctl to the check of its command; the rest is allowed. The
  // command check and the returns of the errors end the program.
  const errnos = [...new Set([EOPNOTSUPP, ...abis.flatMap(({ refused }) => refused.map(({ errno }) => errno))])];
  const program: (Instruction | JumpIf)[] = [];
  const labels = new Map<string, number>();
  for (const { auditArch, refused, ioctl } of abis) {
    const block = [
      ...refused.map(({ syscall, errno }): JumpIf => ({ k: syscall, label: `errno ${errno}` })),
      ...ioctl.map((syscall): JumpIf => ({ k: syscall, label: 'ioctl' })),
    ];
    program.push([BPF_LD_W_ABS, 0, 0, ARCH], [BPF_JEQ_K, 0, block.length + 2, auditArch], [BPF_LD_W_ABS, 0, 0, SYSCALL_NR], ...block, [BPF_RET_K, 0, 0, RET_ALLOW]);
  }
  program.push([BPF_RET_K, 0, 0, RET_ALLOW]);
  labels.set('ioctl', program.length);
  program.push([BPF_LD_W_ABS, 0, 0, ARG1_LOW], ...REFUSED_IOCTLS.map((k): JumpIf => ({ k, label: `errno ${EOPNOTSUPP}` })), [BPF_RET_K, 0, 0, RET_ALLOW]);
  for (const errno of errnos) {
    labels.set(`errno ${errno}`, program.length);
    program.push([BPF_RET_K, 0, 0, RET_ERRNO | errno]);
  }
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach((step, index) => {
    const [code, jt, jf, k] = Array.isArray(step) ? step : [BPF_JEQ_K, labels.get(step.label)! - index - 1, 0, step.k];
    // Classic BPF jumps forward at most 255 instructions.
    if (jt > 255 || jf > 255) throw new Error(`seccomp filter: jump too far at instruction ${index}`);
    bytes.writeUInt16LE(code, index * 8);
    bytes.writeUInt8(jt, index * 8 + 2);
    bytes.writeUInt8(jf, index * 8 + 3);
    bytes.writeUInt32LE(k >>> 0, index * 8 + 4);
  });
  return bytes;
}
