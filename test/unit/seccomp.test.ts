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
    } else if (code === 0x06) {
      return { action: (k & SECCOMP_RET_ACTION_FULL) >>> 0, data: k & 0xffff };
    } else {
      throw new Error(`unexpected instruction ${code} at ${pc}`);
    }
  }
  throw new Error('the filter ran off its end');
}

const EOPNOTSUPP = 95;
const ENOSYS = 38;

/** The ioctls that allocate disk space (ioctl_preallocate): FS_IOC_RESVSP, FS_IOC_RESVSP64, FS_IOC_ZERO_RANGE, then their 32-bit struct forms. */
const ALLOCATING_IOCTLS = [0x40305828, 0x4030582a, 0x40305839, 0x402c5828, 0x402c582a, 0x402c5839];
/** Ioctls a build needs or that free space: TCGETS, TIOCGWINSZ, FIONREAD, FS_IOC_UNRESVSP64, FICLONE. */
const OTHER_IOCTLS = [0x5401, 0x5413, 0x541b, 0x4030582b, 0x40049409];

describe('the build step seccomp filter', () => {
  it.each([
    ['x64', AUDIT.x86_64, { fallocate: 285, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 1, openat: 257, clone3: 435 }],
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

  it('has no filter for an architecture it does not know (steps run without one)', () => {
    expect(buildStepFilter('riscv64')).toBeUndefined();
  });
});
