// The seccomp filter of every sandboxed build step (bwrap --seccomp): fallocate() fails
// with EOPNOTSUPP. RLIMIT_FSIZE does not bound an allocation that keeps a file's size
// (FALLOC_FL_KEEP_SIZE): a build reserved gigabytes of disk in milliseconds, far faster
// than the workspace's disk watch looks. On EOPNOTSUPP glibc's posix_fallocate writes the
// blocks instead, which the limits do see.

/** Per Node architecture, the kernel ABIs a process may use, with fallocate's number in each. */
const FALLOCATE: Record<string, { auditArch: number; syscalls: number[] }[]> = {
  // x86_64 (and its x32 numbers, bit 30 set), and i386 binaries.
  x64: [
    { auditArch: 0xc000003e, syscalls: [285, 0x40000000 | 285] },
    { auditArch: 0x40000003, syscalls: [324] },
  ],
  // aarch64, and 32-bit ARM (EABI) binaries.
  arm64: [
    { auditArch: 0xc00000b7, syscalls: [47] },
    { auditArch: 0x40000028, syscalls: [352] },
  ],
};

const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_RET_K = 0x06;
/** Offsets in struct seccomp_data. */
const SYSCALL_NR = 0;
const ARCH = 4;
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;
const EOPNOTSUPP = 95;

type Instruction = [code: number, jumpIfTrue: number, jumpIfFalse: number, k: number];

/** The filter as classic BPF (struct sock_filter[], little-endian like both architectures); undefined on one not listed. */
export function fallocateFilter(arch: string = process.arch): Buffer | undefined {
  const abis = FALLOCATE[arch];
  if (!abis) return undefined;
  // Per ABI: skip the block unless the arch matches; then each listed number jumps to DENY.
  const program: (Instruction | { denyIfEqual: number })[] = [];
  for (const { auditArch, syscalls } of abis) {
    program.push([BPF_LD_W_ABS, 0, 0, ARCH], [BPF_JEQ_K, 0, syscalls.length + 2, auditArch], [BPF_LD_W_ABS, 0, 0, SYSCALL_NR]);
    program.push(...syscalls.map((denyIfEqual) => ({ denyIfEqual })), [BPF_RET_K, 0, 0, RET_ALLOW]);
  }
  program.push([BPF_RET_K, 0, 0, RET_ALLOW], [BPF_RET_K, 0, 0, RET_ERRNO | EOPNOTSUPP]);
  const deny = program.length - 1;
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach((step, index) => {
    const [code, jt, jf, k] = Array.isArray(step) ? step : [BPF_JEQ_K, deny - index - 1, 0, step.denyIfEqual];
    bytes.writeUInt16LE(code, index * 8);
    bytes.writeUInt8(jt, index * 8 + 2);
    bytes.writeUInt8(jf, index * 8 + 3);
    bytes.writeUInt32LE(k, index * 8 + 4);
  });
  return bytes;
}
