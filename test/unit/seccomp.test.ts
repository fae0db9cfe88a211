import { describe, expect, it } from 'vitest';
import { buildStepFilter } from '../../src/toolchain/seccomp.js';

// The build steps' seccomp filter, run by a small classic-BPF interpreter as the kernel
// would run it, for every ABI of both architectures (only one of them can run here).

const AUDIT = { x86_64: 0xc000003e, i386: 0x40000003, aarch64: 0xc00000b7, arm: 0x40000028 };
const X32 = 0x40000000;

/** What the filter answers to one system call: 'allow', or the errno it fails with. */
function verdict(filter: Buffer, arch: number, syscall: number): 'allow' | number {
  let pc = 0;
  let accumulator = 0;
  for (let steps = 0; steps < filter.length / 8; steps++) {
    const [code, jt, jf, k] = [filter.readUInt16LE(pc * 8), filter.readUInt8(pc * 8 + 2), filter.readUInt8(pc * 8 + 3), filter.readUInt32LE(pc * 8 + 4)];
    if (code === 0x20) {
      accumulator = k === 0 ? syscall : k === 4 ? arch : Number.NaN;
      pc++;
    } else if (code === 0x15) {
      pc += 1 + (accumulator === k ? jt : jf);
    } else if (code === 0x06) {
      return k === 0x7fff0000 ? 'allow' : (k & 0xffff);
    } else {
      throw new Error(`unexpected instruction ${code} at ${pc}`);
    }
  }
  throw new Error('the filter ran off its end');
}

const EOPNOTSUPP = 95;
const ENOSYS = 38;

describe('the build step seccomp filter', () => {
  it.each([
    ['x64', AUDIT.x86_64, { fallocate: 285, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 1, openat: 257, clone3: 435 }],
    ['x64', AUDIT.x86_64, { fallocate: X32 | 285, io_uring_setup: X32 | 425, io_uring_enter: X32 | 426, io_uring_register: X32 | 427 }, { write: X32 | 1 }],
    ['x64', AUDIT.i386, { fallocate: 324, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 4, 'x86_64 fallocate number': 285 }],
    ['arm64', AUDIT.aarch64, { fallocate: 47, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 64, 'arm fallocate number': 352 }],
    ['arm64', AUDIT.arm, { fallocate: 352, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427 }, { write: 4, 'aarch64 fallocate number': 47 }],
  ] as const)('on %s (audit arch %i): refuses fallocate and io_uring, allows the rest', (arch, auditArch, refused, allowed) => {
    const filter = buildStepFilter(arch)!;
    expect(verdict(filter, auditArch, refused.fallocate)).toBe(EOPNOTSUPP);
    for (const call of [refused.io_uring_setup, refused.io_uring_enter, refused.io_uring_register]) expect(verdict(filter, auditArch, call)).toBe(ENOSYS);
    for (const call of Object.values(allowed)) expect(verdict(filter, auditArch, call)).toBe('allow');
  });

  it('has no filter for an architecture it does not know (steps run without one)', () => {
    expect(buildStepFilter('riscv64')).toBeUndefined();
  });
});
