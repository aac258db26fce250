/**
 * The BPF filesystem: pins live on a bpffs, which may be mounted anywhere
 * (the library never assumes /sys/fs/bpf), so several agents can keep their
 * objects apart on one machine.
 */
import { existsSync, mkdirSync, statfsSync } from 'node:fs';
import { errno, libcCalls } from './sys.js';
import { BpfSyscallError, BpfUsageError } from './errors.js';

/** `BPF_FS_MAGIC` from linux/magic.h. */
const BPF_FS_MAGIC = 0xcafe4a11;
/** Where a system's shared bpffs is conventionally mounted. */
const SYS_FS_BPF = '/sys/fs/bpf';

/** Is `path` on a bpffs? False when it does not exist. */
export function isBpffs(path: string): boolean {
  try {
    return statfsSync(path).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Makes sure `dir` is on a bpffs: creates it and, when `mount` is set and it is
 * not on one, mounts a new bpffs there (mode 0700). Returns whether it mounted.
 */
export function ensureBpffs(dir: string, opts: { mount?: boolean } = {}): boolean {
  // The conventional /sys/fs/bpf is an empty sysfs directory until a bpffs is
  // mounted on it, and nothing can be created inside it before that.
  if (opts.mount && dir.startsWith(`${SYS_FS_BPF}/`) && !existsSync(dir) && existsSync(SYS_FS_BPF) && !isBpffs(SYS_FS_BPF)) {
    mountBpffs(SYS_FS_BPF, 'mode=0755');
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (isBpffs(dir)) return false;
  if (!opts.mount) {
    throw new BpfUsageError(`${dir} is not on a BPF filesystem: mount one (mount -t bpf bpf ${dir}) or choose another directory`);
  }
  mountBpffs(dir, 'mode=0700');
  return true;
}

function mountBpffs(dir: string, options: string): void {
  if ((libcCalls.mount('bpf', dir, 'bpf', 0, options) as number) < 0) {
    throw new BpfSyscallError(`mount bpffs at ${dir}`, errno());
  }
}

/** Unmounts a bpffs mounted by {@link ensureBpffs} (lazily, so open pins do not block it). */
export function unmountBpffs(dir: string): void {
  const MNT_DETACH = 2;
  if ((libcCalls.umount2(dir, MNT_DETACH) as number) < 0) {
    throw new BpfSyscallError(`unmount bpffs at ${dir}`, errno());
  }
}
