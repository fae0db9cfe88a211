import { describe, expect, it } from 'vitest';
import { buildStepFilter } from '../../src/toolchain/seccomp.js';

// The build steps' seccomp filter, run by a small classic-BPF interpreter as the kernel
// would run it, for every ABI of both architectures (only one of them can run here).

const AUDIT = { x86_64: 0xc000003e, i386: 0x40000003, aarch64: 0xc00000b7, arm: 0x40000028 };
const X32 = 0x40000000;

const SECCOMP_RET_ACTION_FULL = 0xffff0000;
const SECCOMP_RET_ALLOW = 0x7fff0000;
const SECCOMP_RET_ERRNO = 0x00050000;

/** An answer of the filter: the action (SECCOMP_RET_ACTION_FULL bits) and the 16 bits of data beside it. */
interface Answer {
  action: number;
  data: number;
}
const allow = { action: SECCOMP_RET_ALLOW, data: 0 };
/** The call fails with `errno`: SECCOMP_RET_ERRNO, not a TRAP, KILL or TRACE that happens to carry the same low bits. */
const fails = (errno: number) => ({ action: SECCOMP_RET_ERRNO, data: errno });

/** What the filter answers to one system call. `args` as the kernel passes them, 64 bits each. */
function verdict(filter: Buffer, arch: number, syscall: number, args: bigint[] = []): Answer {
  // struct seccomp_data: nr, arch, instruction_pointer, args[6], little-endian.
  const data = Buffer.alloc(64);
  data.writeUInt32LE(syscall >>> 0, 0);
  data.writeUInt32LE(arch >>> 0, 4);
  data.writeBigUInt64LE(0x7f00_1234_5678n, 8);
  args.forEach((arg, index) => data.writeBigUInt64LE(BigInt.asUintN(64, arg), 16 + index * 8));
  let pc = 0;
  let accumulator = 0;
  for (let steps = 0; steps < filter.length / 8; steps++) {
    const [code, jt, jf, k] = [filter.readUInt16LE(pc * 8), filter.readUInt8(pc * 8 + 2), filter.readUInt8(pc * 8 + 3), filter.readUInt32LE(pc * 8 + 4)];
    if (code === 0x20) {
      if (k % 4 !== 0 || k > 60) throw new Error(`load from offset ${k} at ${pc}`);
      accumulator = data.readUInt32LE(k);
      pc++;
    } else if (code === 0x15) {
      pc += 1 + (accumulator === k ? jt : jf);
    } else if (code === 0x45) {
      pc += 1 + ((accumulator & k) !== 0 ? jt : jf);
    } else if (code === 0x06) {
      return { action: (k & SECCOMP_RET_ACTION_FULL) >>> 0, data: k & 0xffff };
    } else {
      throw new Error(`unexpected instruction ${code} at ${pc}`);
    }
  }
  throw new Error('the filter ran off its end');
}

const EPERM = 1;
const EOPNOTSUPP = 95;
const ENOSYS = 38;

/** The ioctls that allocate disk space (ioctl_preallocate): FS_IOC_RESVSP, FS_IOC_RESVSP64, FS_IOC_ZERO_RANGE, then their 32-bit struct forms. */
const ALLOCATING_IOCTLS = [0x40305828, 0x4030582a, 0x40305839, 0x402c5828, 0x402c582a, 0x402c5839];
/** Ioctls a build needs or that free space: TCGETS, TIOCGWINSZ, FIONREAD, FS_IOC_UNRESVSP64, FICLONE. */
const OTHER_IOCTLS = [0x5401, 0x5413, 0x541b, 0x4030582b, 0x40049409];

describe('the build step seccomp filter', () => {
  it.each([
    ['x64', AUDIT.x86_64, { fallocate: 285, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 1, openat: 257, fork: 57 }],
    ['x64', AUDIT.x86_64, { fallocate: X32 | 285, io_uring_setup: X32 | 425, io_uring_enter: X32 | 426, io_uring_register: X32 | 427 }, { write: X32 | 1 }],
    ['x64', AUDIT.i386, { fallocate: 324, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 4, 'x86_64 fallocate number': 285 }],
    ['arm64', AUDIT.aarch64, { fallocate: 47, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 64, 'arm fallocate number': 352 }],
    ['arm64', AUDIT.arm, { fallocate: 352, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 4, 'aarch64 fallocate number': 47 }],
  ] as const)('on %s (audit arch %i): refuses fallocate and io_uring, allows the rest', (arch, auditArch, refused, allowed) => {
    const filter = buildStepFilter(arch)!;
    expect(verdict(filter, auditArch, refused.fallocate)).toEqual(fails(EOPNOTSUPP));
    for (const call of [refused.io_uring_setup, refused.io_uring_enter, refused.io_uring_register]) expect(verdict(filter, auditArch, call)).toEqual(fails(ENOSYS));
    for (const call of Object.values(allowed)) expect(verdict(filter, auditArch, call)).toEqual(allow);
  });

  it.each([
    ['x64', AUDIT.x86_64, 16, 'x86_64'],
    ['x64', AUDIT.x86_64, X32 | 514, 'x32'],
    ['x64', AUDIT.x86_64, X32 | 16, 'x32, the x86_64 number'],
    ['x64', AUDIT.i386, 54, 'i386'],
    ['arm64', AUDIT.aarch64, 29, 'aarch64'],
    ['arm64', AUDIT.arm, 54, 'arm'],
  ] as const)('on %s (audit arch %i): refuses the ioctls that reserve disk space (ioctl %i, %s), and allows the others', (arch, auditArch, ioctl, _abi) => {
    const filter = buildStepFilter(arch)!;
    for (const command of ALLOCATING_IOCTLS) {
      expect(verdict(filter, auditArch, ioctl, [3n, BigInt(command), 0x7ffd_0000n])).toEqual(fails(EOPNOTSUPP));
      // The kernel reads only the command's low 32 bits: high ones set change nothing.
      expect(verdict(filter, auditArch, ioctl, [3n, (0xffff_ffffn << 32n) | BigInt(command), 0n])).toEqual(fails(EOPNOTSUPP));
    }
    for (const command of OTHER_IOCTLS) expect(verdict(filter, auditArch, ioctl, [1n, BigInt(command), 0n])).toEqual(allow);
    // The same argument to a call that is not ioctl is none of the filter's business.
    expect(verdict(filter, auditArch, arch === 'x64' && auditArch === AUDIT.x86_64 ? 0 : 3, [3n, BigInt(ALLOCATING_IOCTLS[1]!), 0n])).toEqual(allow);
  });

  // Per ABI, each call that sets a mode with its number and the index of its mode argument
  // (open and openat: also of their flags); calls an ABI does not have are left out.
  const O_CREAT = 0o100;
  const O_TMPFILE = 0o20000000 | 0o200000;
  const O_WRONLY = 1;
  type ModeCalls = Record<string, { nr: number; mode: number; flags?: number }>;
  const legacy = (nrs: { open: number; creat: number; mkdir: number; mknod: number; chmod: number }): ModeCalls => ({
    open: { nr: nrs.open, flags: 1, mode: 2 },
    creat: { nr: nrs.creat, mode: 1 },
    mkdir: { nr: nrs.mkdir, mode: 1 },
    mknod: { nr: nrs.mknod, mode: 1 },
    chmod: { nr: nrs.chmod, mode: 1 },
  });
  const at = (nrs: { fchmod: number; openat: number; mkdirat: number; mknodat: number; fchmodat: number; fchmodat2: number }): ModeCalls => ({
    fchmod: { nr: nrs.fchmod, mode: 1 },
    openat: { nr: nrs.openat, flags: 2, mode: 3 },
    mkdirat: { nr: nrs.mkdirat, mode: 2 },
    mknodat: { nr: nrs.mknodat, mode: 2 },
    fchmodat: { nr: nrs.fchmodat, mode: 2 },
    fchmodat2: { nr: nrs.fchmodat2, mode: 2 },
  });
  const x86_64 = { ...legacy({ open: 2, creat: 85, mkdir: 83, mknod: 133, chmod: 90 }), ...at({ fchmod: 91, openat: 257, mkdirat: 258, mknodat: 259, fchmodat: 268, fchmodat2: 452 }) };
  const x32 = Object.fromEntries(Object.entries(x86_64).map(([name, call]) => [name, { ...call, nr: X32 | call.nr }]));
  const thirtyTwoBit = (openat: number, fchmodat: number) => ({
    ...legacy({ open: 5, creat: 8, mkdir: 39, mknod: 14, chmod: 15 }),
    ...at({ fchmod: 94, openat, mkdirat: openat + 1, mknodat: openat + 2, fchmodat, fchmodat2: 452 }),
  });

  it.each([
    ['x64', AUDIT.x86_64, 'x86_64', x86_64, 437],
    ['x64', AUDIT.x86_64, 'x32', x32, X32 | 437],
    ['x64', AUDIT.i386, 'i386', thirtyTwoBit(295, 306), 437],
    ['arm64', AUDIT.aarch64, 'aarch64', at({ fchmod: 52, openat: 56, mkdirat: 34, mknodat: 33, fchmodat: 53, fchmodat2: 452 }), 437],
    ['arm64', AUDIT.arm, 'arm', thirtyTwoBit(322, 333), 437],
  ] as const)('on %s (audit arch %i, %s): refuses a setuid or setgid mode in every call that sets one, and openat2', (arch, auditArch, _abi, calls, openat2) => {
    const filter = buildStepFilter(arch)!;
    const ask = (call: { nr: number; mode: number; flags?: number }, mode: bigint, flags = O_CREAT | O_WRONLY) => {
      const args = [3n, 4n, 5n, 6n, 7n, 8n];
      args[call.mode] = mode;
      if (call.flags !== undefined) args[call.flags] = BigInt(flags);
      return verdict(filter, auditArch, call.nr, args);
    };
    for (const [name, call] of Object.entries(calls)) {
      // With a file type (mknod) and with bits above the low word, which the kernel never reads (it reads 16).
      for (const mode of [0o4755n, 0o2755n, 0o6777n, 0o104755n, (0xffff_ffffn << 32n) | 0o4000n]) expect([name, mode, ask(call, mode)]).toEqual([name, mode, fails(EPERM)]);
      for (const mode of [0o755n, 0o1777n, 0o644n, 0o100644n, (0xffff_ffffn << 32n) | 0o755n]) expect([name, mode, ask(call, mode)]).toEqual([name, mode, allow]);
      if (call.flags !== undefined) {
        // Without O_CREAT or O_TMPFILE open reads no mode: whatever the register holds passes.
        expect([name, ask(call, 0o4755n, O_WRONLY)]).toEqual([name, allow]);
        expect([name, ask(call, 0o4755n, O_TMPFILE | O_WRONLY)]).toEqual([name, fails(EPERM)]);
      }
    }
    // Its mode is in a struct the filter cannot read.
    expect(verdict(filter, auditArch, openat2, [3n, 0x7ffd_0000n, 0x7ffd_1000n, 24n])).toEqual(fails(ENOSYS));
  });

  const CLONE_NEWUSER = 0x10000000n;
  /** Other namespaces and a thread's flags (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | …), which a step may use. */
  const OTHER_CLONE_FLAGS = [0x11n, 0x3d0f00n, 0x20000n | 0x40000000n];

  it.each([
    ['x64', AUDIT.x86_64, 'x86_64', { clone: 56, unshare: 272, clone3: 435 }],
    ['x64', AUDIT.x86_64, 'x32', { clone: X32 | 56, unshare: X32 | 272, clone3: X32 | 435 }],
    ['x64', AUDIT.i386, 'i386', { clone: 120, unshare: 310, clone3: 435 }],
    ['arm64', AUDIT.aarch64, 'aarch64', { clone: 220, unshare: 97, clone3: 435 }],
    ['arm64', AUDIT.arm, 'arm', { clone: 120, unshare: 337, clone3: 435 }],
  ] as const)('on %s (audit arch %i, %s): refuses a new user namespace through clone, unshare or clone3, and allows the other clones', (arch, auditArch, _abi, calls) => {
    const filter = buildStepFilter(arch)!;
    for (const call of [calls.clone, calls.unshare]) {
      expect(verdict(filter, auditArch, call, [CLONE_NEWUSER])).toEqual(fails(EPERM));
      expect(verdict(filter, auditArch, call, [CLONE_NEWUSER | 0x11n, 0x7ffd_0000n])).toEqual(fails(EPERM));
      for (const flags of OTHER_CLONE_FLAGS) expect(verdict(filter, auditArch, call, [flags, 0x7ffd_0000n])).toEqual(allow);
    }
    // Its flags are in a struct the filter cannot read: glibc falls back to clone.
    expect(verdict(filter, auditArch, calls.clone3, [0x7ffd_0000n, 88n])).toEqual(fails(ENOSYS));
  });

  it("reads a call's number in its own ABI only", () => {
    // x86_64's chmod (90) is i386's mmap; i386's and arm's (15) is x86_64's rt_sigreturn and aarch64's lremovexattr.
    expect(verdict(buildStepFilter('x64')!, AUDIT.i386, 90, [0n, 0o4755n])).toEqual(allow);
    expect(verdict(buildStepFilter('x64')!, AUDIT.x86_64, 15, [0n, 0o4755n])).toEqual(allow);
    expect(verdict(buildStepFilter('arm64')!, AUDIT.aarch64, 15, [0n, 0o4755n])).toEqual(allow);
  });

  it('has no filter for an architecture it does not know (steps run without one)', () => {
    expect(buildStepFilter('riscv64')).toBeUndefined();
  });
});
