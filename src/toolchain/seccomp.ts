// The seccomp filter of every sandboxed build step (bwrap --seccomp): system calls that get
// around the disk limits, or leave a setuid program on the host, fail.
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
// - A mode with S_ISUID or S_ISGID fails with EPERM: chmod, fchmod, fchmodat, fchmodat2, and
//   open, openat, creat, mkdir, mkdirat, mknod, mknodat when they create (open and openat
//   only with O_CREAT or O_TMPFILE; without them the mode is not read). A root server's steps
//   were the host's root (they still are where they cannot run as BUILD_SANDBOX_UID), so
//   `chmod 4755` on a file one wrote made a setuid-root program that any local user could run
//   from the host; a setuid program of the steps' own user is no one's business either. Only
//   the low 32 bits of the mode are compared: the kernel reads 16 of them.
// - openat2 fails with ENOSYS: its mode is inside a struct the filter cannot read. glibc
//   does not use it for open(); programs that try it fall back to openat.
// - No nested user namespace: clone and unshare with CLONE_NEWUSER fail with EPERM, and
//   clone3, whose flags are inside a struct the filter cannot read, with ENOSYS (glibc and
//   the programs built on it fall back to clone). A root server's steps run in a user
//   namespace Kiln made (sandbox.ts), where bwrap's --disable-userns cannot be used; a new
//   user namespace would give a step every capability inside it, and the kernel surface
//   that comes with them.

const EPERM = 1;
const EOPNOTSUPP = 95;
const ENOSYS = 38;

/** ioctl commands that allocate disk space without growing the file: _IOW('X', n, struct space_resv), 48 bytes or 44 (i386). */
const REFUSED_IOCTLS = [0x28, 0x2a, 0x39].flatMap((n) => [0x40305800 | n, 0x402c5800 | n]);
/** S_ISUID | S_ISGID. */
const SET_ID_BITS = 0o6000;
/** O_CREAT | __O_TMPFILE, the same on every ABI here: the flags with which open reads its mode. */
const CREATING_FLAGS = 0o100 | 0o20000000;

/** Calls whose mode argument is checked, by the index of the argument (and, for open, of its flags). */
type ModeCheck = { syscall: number; mode: 1 | 2 | 3; flags?: 1 | 2 };

interface Abi {
  auditArch: number;
  refused: { syscall: number; errno: number }[];
  /** Its ioctl numbers, whose command is checked against REFUSED_IOCTLS. */
  ioctl: number[];
  /** Calls refused with EPERM when their mode has SET_ID_BITS. */
  modes: ModeCheck[];
  /** clone and unshare, refused with EPERM when their flags (argument 0) ask for CLONE_NEWUSER. */
  namespaces: number[];
}

const X32 = 0x40000000;
const OPENAT2 = 437;
const FCHMODAT2 = 452;
/** The same number on every ABI here (x32's with bit 30). */
const CLONE3 = 435;
const CLONE_NEWUSER = 0x10000000;

/** Per Node architecture, the kernel ABIs a process may use, with each refused call's number there. */
const ABIS: Record<string, Abi[]> = {
  // x86_64 (and its x32 numbers, bit 30 set; x32's own ioctl is 514), and i386 binaries.
  x64: [
    {
      auditArch: 0xc000003e,
      refused: [...both([285, 425, 426, 427]), ...both([285, 425, 426, 427].map((syscall) => X32 | syscall))],
      ioctl: [16, X32 | 16, X32 | 514],
      modes: [...setId({ open: 2, creat: 85, mkdir: 83, mknod: 133, chmod: 90, fchmod: 91, openat: 257, mkdirat: 258, mknodat: 259, fchmodat: 268 }), ...setId({ open: X32 | 2, creat: X32 | 85, mkdir: X32 | 83, mknod: X32 | 133, chmod: X32 | 90, fchmod: X32 | 91, openat: X32 | 257, mkdirat: X32 | 258, mknodat: X32 | 259, fchmodat: X32 | 268 }, X32)],
      // clone, unshare
      namespaces: [56, 272, X32 | 56, X32 | 272],
    },
    { auditArch: 0x40000003, refused: both([324, 425, 426, 427]), ioctl: [54], modes: setId({ open: 5, creat: 8, mkdir: 39, mknod: 14, chmod: 15, fchmod: 94, openat: 295, mkdirat: 296, mknodat: 297, fchmodat: 306 }), namespaces: [120, 310] },
  ],
  // aarch64 (no open, creat, mkdir, mknod or chmod of its own), and 32-bit ARM (EABI) binaries.
  arm64: [
    { auditArch: 0xc00000b7, refused: both([47, 425, 426, 427]), ioctl: [29], modes: setId({ fchmod: 52, openat: 56, mkdirat: 34, mknodat: 33, fchmodat: 53 }), namespaces: [220, 97] },
    { auditArch: 0x40000028, refused: both([352, 425, 426, 427]), ioctl: [54], modes: setId({ open: 5, creat: 8, mkdir: 39, mknod: 14, chmod: 15, fchmod: 94, openat: 322, mkdirat: 323, mknodat: 324, fchmodat: 333 }), namespaces: [120, 337] },
  ],
};

/** [fallocate, io_uring_setup, io_uring_enter, io_uring_register] with their errors, and openat2 and clone3 (the same numbers everywhere, x32's with bit 30). */
function both([fallocate, ...ioUring]: number[]) {
  const x32 = fallocate! & X32;
  return [{ syscall: fallocate!, errno: EOPNOTSUPP }, ...[...ioUring, x32 | OPENAT2, x32 | CLONE3].map((syscall) => ({ syscall, errno: ENOSYS }))];
}

/** The calls that set a mode, by their numbers on one ABI; fchmodat2 has the same number everywhere (x32's with bit 30). */
function setId(
  calls: { open?: number; creat?: number; mkdir?: number; mknod?: number; chmod?: number; fchmod: number; openat: number; mkdirat: number; mknodat: number; fchmodat: number },
  x32 = 0,
): ModeCheck[] {
  const checks: ModeCheck[] = [
    // open(path, flags, mode), openat(dirfd, path, flags, mode)
    ...(calls.open !== undefined ? [{ syscall: calls.open, flags: 1, mode: 2 } as const] : []),
    { syscall: calls.openat, flags: 2, mode: 3 },
    // fchmodat(dirfd, path, mode), fchmodat2(dirfd, path, mode, flags), mkdirat(dirfd, path, mode), mknodat(dirfd, path, mode, dev)
    ...[calls.fchmodat, x32 | FCHMODAT2, calls.mkdirat, calls.mknodat].map((syscall) => ({ syscall, mode: 2 }) as const),
    // chmod(path, mode), fchmod(fd, mode), creat(path, mode), mkdir(path, mode), mknod(path, mode, dev)
    ...[calls.chmod, calls.fchmod, calls.creat, calls.mkdir, calls.mknod].filter((syscall) => syscall !== undefined).map((syscall) => ({ syscall, mode: 1 }) as const),
  ];
  return checks;
}

const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_JSET_K = 0x45;
const BPF_RET_K = 0x06;
/** Offsets in struct seccomp_data: the call's number, its ABI, and the low word of an argument (little-endian). */
const SYSCALL_NR = 0;
const ARCH = 4;
const argLow = (index: number) => 16 + index * 8;
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;

type Instruction = [code: number, jumpIfTrue: number, jumpIfFalse: number, k: number];
/** Jumps to `label` when the accumulator is `k` (or, with `jset`, has a bit of `k` set), else goes on. */
type JumpIf = { k: number; label: string; jset?: boolean };

/** The filter as classic BPF (struct sock_filter[], little-endian like both architectures); undefined on one not listed. */
export function buildStepFilter(arch: string = process.arch): Buffer | undefined {
  const abis = ABIS[arch];
  if (!abis) return undefined;
  // Per ABI: skip the block unless the arch matches; then each refused number jumps to the
  // return of its error, ioctl to the check of its command, and each call that sets a mode
  // to the check of that argument; the rest is allowed. The checks and the returns of the
  // errors end the program.
  const errnos = [...new Set([EOPNOTSUPP, EPERM, ...abis.flatMap(({ refused }) => refused.map(({ errno }) => errno))])];
  const program: (Instruction | JumpIf)[] = [];
  const labels = new Map<string, number>();
  for (const { auditArch, refused, ioctl, modes, namespaces } of abis) {
    const block = [
      ...refused.map(({ syscall, errno }): JumpIf => ({ k: syscall, label: `errno ${errno}` })),
      ...ioctl.map((syscall): JumpIf => ({ k: syscall, label: 'ioctl' })),
      ...namespaces.map((syscall): JumpIf => ({ k: syscall, label: 'namespaces' })),
      ...modes.map(({ syscall, mode, flags }): JumpIf => ({ k: syscall, label: flags ? `flags ${flags}` : `mode ${mode}` })),
    ];
    program.push([BPF_LD_W_ABS, 0, 0, ARCH], [BPF_JEQ_K, 0, block.length + 2, auditArch], [BPF_LD_W_ABS, 0, 0, SYSCALL_NR], ...block, [BPF_RET_K, 0, 0, RET_ALLOW]);
  }
  program.push([BPF_RET_K, 0, 0, RET_ALLOW]);
  labels.set('ioctl', program.length);
  program.push([BPF_LD_W_ABS, 0, 0, argLow(1)], ...REFUSED_IOCTLS.map((k): JumpIf => ({ k, label: `errno ${EOPNOTSUPP}` })), [BPF_RET_K, 0, 0, RET_ALLOW]);
  // clone's and unshare's flags are their first argument on every ABI here.
  labels.set('namespaces', program.length);
  program.push([BPF_LD_W_ABS, 0, 0, argLow(0)], { k: CLONE_NEWUSER, label: `errno ${EPERM}`, jset: true }, [BPF_RET_K, 0, 0, RET_ALLOW]);
  // open's flags at argument 1 (its mode at 2), openat's at 2 (mode at 3): without a creating
  // flag the call jumps over the check of the mode just below to its allow, else goes into it.
  for (const [flags, mode] of [[undefined, 1], [1, 2], [2, 3]] as const) {
    if (flags) {
      labels.set(`flags ${flags}`, program.length);
      program.push([BPF_LD_W_ABS, 0, 0, argLow(flags)], [BPF_JSET_K, 0, 2, CREATING_FLAGS]);
    }
    labels.set(`mode ${mode}`, program.length);
    program.push([BPF_LD_W_ABS, 0, 0, argLow(mode)], { k: SET_ID_BITS, label: `errno ${EPERM}`, jset: true }, [BPF_RET_K, 0, 0, RET_ALLOW]);
  }
  for (const errno of errnos) {
    labels.set(`errno ${errno}`, program.length);
    program.push([BPF_RET_K, 0, 0, RET_ERRNO | errno]);
  }
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach((step, index) => {
    const [code, jt, jf, k] = Array.isArray(step) ? step : [step.jset ? BPF_JSET_K : BPF_JEQ_K, labels.get(step.label)! - index - 1, 0, step.k];
    // Classic BPF jumps forward at most 255 instructions.
    if (jt > 255 || jf > 255) throw new Error(`seccomp filter: jump too far at instruction ${index}`);
    bytes.writeUInt16LE(code, index * 8);
    bytes.writeUInt8(jt, index * 8 + 2);
    bytes.writeUInt8(jf, index * 8 + 3);
    bytes.writeUInt32LE(k >>> 0, index * 8 + 4);
  });
  return bytes;
}
