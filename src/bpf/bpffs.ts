/**
 * The BPF filesystem: pins live on a bpffs, which may be mounted anywhere
 * (the library never assumes /sys/fs/bpf), so several agents can keep their
 * objects apart on one machine.
 */
import { mkdirSync, statfsSync } from 'node:fs';
import { errno, libcCalls } from './sys.js';
import { BpfSyscallError, BpfUsageError } from './errors.js';

/** `BPF_FS_MAGIC` from linux/magic.h. */
const BPF_FS_MAGIC = 0xcafe4a11;

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
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (isBpffs(dir)) return false;
  if (!opts.mount) {
    throw new BpfUsageError(`${dir} is not on a BPF filesystem: mount one (mount -t bpf bpf ${dir}) or choose another directory`);
  }
  if ((libcCalls.mount('bpf', dir, 'bpf', 0, 'mode=0700') as number) < 0) {
    throw new BpfSyscallError(`mount bpffs at ${dir}`, errno());
  }
  return true;
}

/** Unmounts a bpffs mounted by {@link ensureBpffs} (lazily, so open pins do not block it). */
export function unmountBpffs(dir: string): void {
  const MNT_DETACH = 2;
  if ((libcCalls.umount2(dir, MNT_DETACH) as number) < 0) {
    throw new BpfSyscallError(`unmount bpffs at ${dir}`, errno());
  }
}
