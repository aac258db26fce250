/** cgroup v2 hooks through BPF links (`BPF_LINK_CREATE` with a cgroup descriptor). */
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { BpfSyscallError, BpfUsageError } from '../errors.js';
import type { Program } from '../program.js';
import { AttachType } from '../types.js';
import { Link, attachTypeName, linkCreate } from './link.js';

/** The cgroup sock_addr hooks (`SEC("cgroup/connect4")`, …). */
export type SockAddrHook =
  | 'connect4' | 'connect6' | 'sendmsg4' | 'sendmsg6'
  | 'recvmsg4' | 'recvmsg6' | 'getpeername4' | 'getpeername6';

const sockAddrTypes: Record<SockAddrHook, AttachType> = {
  connect4: AttachType.CgroupInet4Connect,
  connect6: AttachType.CgroupInet6Connect,
  sendmsg4: AttachType.CgroupUdp4Sendmsg,
  sendmsg6: AttachType.CgroupUdp6Sendmsg,
  recvmsg4: AttachType.CgroupUdp4Recvmsg,
  recvmsg6: AttachType.CgroupUdp6Recvmsg,
  getpeername4: AttachType.CgroupInet4Getpeername,
  getpeername6: AttachType.CgroupInet6Getpeername,
};

/** The attach type of a sock_addr hook. */
export function sockAddrAttachType(hook: SockAddrHook): AttachType {
  const t = sockAddrTypes[hook];
  if (t === undefined) throw new BpfUsageError(`unknown sock_addr hook ${String(hook)} (hooks: ${Object.keys(sockAddrTypes).join(', ')})`);
  return t;
}

/**
 * Attaches `program` to the cgroup v2 directory `cgroupPath` at `attachType`.
 * The program runs for sockets created by processes in that cgroup or below
 * it (a socket belongs to the cgroup its creator was in when it was made).
 * Link attachments always allow several programs on a hook. Returns the
 * link: closing it detaches unless it is pinned.
 */
export function attachCgroup(program: Program, cgroupPath: string, attachType: AttachType): Link {
  const what = `${program.name} to cgroup ${cgroupPath} (${attachTypeName(attachType)})`;
  let cgroupFd: number;
  try {
    // Node opens with O_CLOEXEC on top of these.
    cgroupFd = openSync(cgroupPath, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BpfSyscallError(`open cgroup ${cgroupPath} to attach ${program.name}`, Math.abs(e.errno ?? 0));
  }
  let fd: number;
  try {
    fd = linkCreate(program.fd, cgroupFd, attachType, 0, { op: `attach ${what}` });
  } finally {
    closeSync(cgroupFd);
  }
  return new Link(fd, `cgroup link of ${what}`);
}
