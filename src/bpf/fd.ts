/** Small helpers around raw BPF file descriptors: info, pin, get, close. */
import { addressOf, bpf, errno, libcCalls } from './sys.js';
import { BpfSyscallError } from './errors.js';
import { Cmd } from './types.js';

/** Throws a {@link BpfSyscallError} for a negative syscall result. */
export function check(result: number, op: () => string): number {
  if (result < 0) throw new BpfSyscallError(op(), errno());
  return result;
}

/** Closes a descriptor, ignoring errors (used on cleanup paths). */
export function closeFd(fd: number): void {
  if (fd >= 0) libcCalls.close(fd);
}

/** `BPF_OBJ_GET_INFO_BY_FD` into a buffer of `size` bytes. */
export function objectInfo(fd: number, size: number, what: string): Buffer {
  const info = Buffer.alloc(size);
  const attr = Buffer.alloc(16);
  attr.writeUInt32LE(fd, 0);
  attr.writeUInt32LE(size, 4);
  attr.writeBigUInt64LE(BigInt(addressOf(info)), 8);
  check(bpf(Cmd.ObjGetInfoByFd, attr), () => `read info of ${what} (fd ${fd})`);
  return info;
}

/** Ids of the maps program `fd` uses (`bpf_prog_info.map_ids`), ascending. */
export function programMapIds(fd: number): number[] {
  const INFO_SIZE = 232;
  const n = objectInfo(fd, INFO_SIZE, 'program').readUInt32LE(52); // nr_map_ids
  if (n === 0) return [];
  const ids = Buffer.alloc(4 * n);
  const info = Buffer.alloc(INFO_SIZE);
  info.writeUInt32LE(n, 52);
  info.writeBigUInt64LE(BigInt(addressOf(ids)), 56); // map_ids
  const attr = Buffer.alloc(16);
  attr.writeUInt32LE(fd, 0);
  attr.writeUInt32LE(INFO_SIZE, 4);
  attr.writeBigUInt64LE(BigInt(addressOf(info)), 8);
  check(bpf(Cmd.ObjGetInfoByFd, attr), () => `read the map ids of program fd ${fd}`);
  return Array.from({ length: Math.min(n, info.readUInt32LE(52)) }, (_, i) => ids.readUInt32LE(4 * i)).sort((a, b) => a - b);
}

/** Pins `fd` at `path` on a bpffs. */
export function pinFd(fd: number, path: string, what: string): void {
  const p = Buffer.from(`${path}\0`);
  const attr = Buffer.alloc(24);
  attr.writeBigUInt64LE(BigInt(addressOf(p)), 0);
  attr.writeUInt32LE(fd, 8);
  check(bpf(Cmd.ObjPin, attr), () => `pin ${what} at ${path}`);
}

/** Opens the object pinned at `path`; returns its new descriptor. */
export function getPinned(path: string, what: string): number {
  const p = Buffer.from(`${path}\0`);
  const attr = Buffer.alloc(24);
  attr.writeBigUInt64LE(BigInt(addressOf(p)), 0);
  return check(bpf(Cmd.ObjGet, attr), () => `open pinned ${what} ${path}`);
}

/** Object name stored in an info struct at `offset` (16 bytes, NUL padded). */
export function infoName(info: Buffer, offset: number): string {
  const raw = info.subarray(offset, offset + 16);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? 16 : end).toString('utf8');
}
