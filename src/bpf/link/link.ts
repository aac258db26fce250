/**
 * BPF links: kernel objects that hold one attachment of a program to a hook
 * (a device's XDP or tcx hook, a cgroup, …).
 *
 * The attachment lives as long as the link does. A link lives while a
 * descriptor refers to it or while it is pinned on a bpffs; so
 *
 * - {@link Link.close} drops this handle: an unpinned link (and so the
 *   attachment) goes away, a pinned one stays attached;
 * - {@link Link.detach} ends the attachment at once (`BPF_LINK_DETACH`), even
 *   when the link is pinned or other descriptors refer to it; what remains is
 *   a defunct link (its pin, if any, stays until {@link Link.unpin}).
 */
import { unlinkSync } from 'node:fs';
import { bpf } from '../sys.js';
import { BpfSyscallError, BpfUsageError } from '../errors.js';
import { check, closeFd, getPinned, objectInfo, pinFd } from '../fd.js';
import { AttachType, Cmd } from '../types.js';

/** `enum bpf_link_type` (linux/bpf.h). */
export enum LinkType {
  Unspec = 0, RawTracepoint = 1, Tracing = 2, Cgroup = 3, Iter = 4, Netns = 5, Xdp = 6,
  PerfEvent = 7, KprobeMulti = 8, StructOps = 9, Netfilter = 10, Tcx = 11, UprobeMulti = 12,
  Netkit = 13, Sockmap = 14,
}

/** Name of a link type for messages (`xdp`, `tcx`, `cgroup`, …). */
export function linkTypeName(type: number): string {
  const name = LinkType[type];
  return name ? name.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase() : `type ${type}`;
}

/** Name of an attach type for messages (`tcx_ingress`, `cgroup_inet4_connect`, …). */
export function attachTypeName(type: number): string {
  const name = AttachType[type];
  return name ? name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase() : `attach type ${type}`;
}

/** What the kernel says about a link (`struct bpf_link_info`). */
export interface LinkInfo {
  type: LinkType;
  id: number;
  programId: number;
  /** XDP and tcx links: the device. 0 once the device is gone or the link detached. */
  ifindex?: number;
  /** tcx, cgroup and netns links: the attach type. */
  attachType?: number;
  /** Cgroup links: the cgroup id (the cgroup directory's inode number); 0 once detached. */
  cgroupId?: bigint;
}

/** `BPF_F_*` flags of `BPF_LINK_CREATE` for multi-program hooks (tcx). */
export const BPF_F_REPLACE = 1 << 2;
export const BPF_F_BEFORE = 1 << 3;
export const BPF_F_AFTER = 1 << 4;
export const BPF_F_ID = 1 << 5;
export const BPF_F_LINK = 1 << 13;

/** Size of the info buffer: the common part plus the type-specific union. */
const LINK_INFO_SIZE = 64;
/** Bytes of `union bpf_attr` passed to `BPF_LINK_CREATE` (the tail stays zero). */
const LINK_CREATE_ATTR_SIZE = 64;

/** Reads `struct bpf_link_info` for `fd`. */
export function linkInfo(fd: number): LinkInfo {
  const b = objectInfo(fd, LINK_INFO_SIZE, 'link');
  const info: LinkInfo = { type: b.readUInt32LE(0), id: b.readUInt32LE(4), programId: b.readUInt32LE(8) };
  switch (info.type) {
    case LinkType.Xdp:
      info.ifindex = b.readUInt32LE(16);
      break;
    case LinkType.Tcx:
    case LinkType.Netkit:
      info.ifindex = b.readUInt32LE(16);
      info.attachType = b.readUInt32LE(20);
      break;
    case LinkType.Cgroup:
      info.cgroupId = b.readBigUInt64LE(16);
      info.attachType = b.readUInt32LE(24);
      break;
    case LinkType.Netns:
      info.attachType = b.readUInt32LE(20);
      break;
    default:
      break;
  }
  return info;
}

/** Extra fields of {@link linkCreate}. */
export interface LinkCreateExtra {
  /** tcx: descriptor of the program or link (with `BPF_F_LINK`) to order against. */
  relativeFd?: number;
  /** tcx: id of the program or link to order against (with `BPF_F_ID`). */
  relativeId?: number;
  /** tcx: fail with ESTALE unless the hook is at this revision (0: do not check). */
  expectedRevision?: number | bigint;
  /** The operation named in an error, e.g. `attach xdp_count to ifindex 5 (xdp, generic mode)`. */
  op?: string;
}

/**
 * Raw `BPF_LINK_CREATE`: attaches `progFd` to `target` (an ifindex or a cgroup
 * descriptor, depending on `attachType`) and returns the new link's descriptor.
 * Device targets are resolved in the calling thread's network namespace.
 */
export function linkCreate(progFd: number, target: number, attachType: number, flags: number, extra: LinkCreateExtra = {}): number {
  const attr = Buffer.alloc(LINK_CREATE_ATTR_SIZE);
  attr.writeUInt32LE(progFd >>> 0, 0);
  attr.writeUInt32LE(target >>> 0, 4);
  attr.writeUInt32LE(attachType >>> 0, 8);
  attr.writeUInt32LE(flags >>> 0, 12);
  if (extra.relativeFd !== undefined && extra.relativeId !== undefined) {
    throw new BpfUsageError('linkCreate: give relativeFd or relativeId, not both');
  }
  const relative = extra.relativeFd ?? extra.relativeId;
  if (relative !== undefined) attr.writeUInt32LE(relative >>> 0, 16);
  if (extra.expectedRevision !== undefined) attr.writeBigUInt64LE(BigInt(extra.expectedRevision), 24);
  const op = extra.op ?? `attach program (fd ${progFd}) to target ${target} (${attachTypeName(attachType)})`;
  return check(bpf(Cmd.LinkCreate, attr), () => op);
}

/** A BPF link descriptor. */
export class Link {
  readonly fd: number;
  readonly id: number;
  readonly type: LinkType;
  /** Id of the attached program (as `bpftool prog show` lists it). */
  readonly programId: number;
  /** Describes the link in errors (`link 12 (tcx)` unless the creator says more). */
  readonly description: string;
  private pinnedAt: string | undefined;
  private closed = false;

  /**
   * Wraps a link descriptor; the Link takes ownership of `fd` (closes it if
   * reading the link's info fails).
   */
  constructor(fd: number, description?: string) {
    let info: LinkInfo;
    try {
      info = linkInfo(fd);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    this.fd = fd;
    this.id = info.id;
    this.type = info.type;
    this.programId = info.programId;
    this.description = description ?? `link ${info.id} (${linkTypeName(info.type)})`;
  }

  /** Opens the link pinned at `path` (e.g. after a restart); closing it leaves the pin attached. */
  static openPinned(path: string): Link {
    const link = new Link(getPinned(path, 'link'), undefined);
    link.pinnedAt = path;
    return link;
  }

  /** Where this handle pinned or opened the link, if it did. */
  get pinPath(): string | undefined {
    return this.pinnedAt;
  }

  /** Whether this handle is closed (by {@link close} or {@link detach}). */
  get isClosed(): boolean {
    return this.closed;
  }

  private live(what: string): void {
    if (this.closed) throw new BpfUsageError(`cannot ${what} ${this.description}: the handle is closed`);
  }

  /** What the kernel says about the link now. */
  info(): LinkInfo {
    this.live('read the info of');
    return linkInfo(this.fd);
  }

  /** Pins the link at `path` on a bpffs: it then outlives this handle and this process. */
  pin(path: string): void {
    this.live('pin');
    pinFd(this.fd, path, this.description);
    this.pinnedAt = path;
  }

  /**
   * Removes the pin this handle made or opened (or the one at `path`). A pinned
   * link that is still attached stays attached while a descriptor refers to it.
   */
  unpin(path = this.pinnedAt): void {
    if (path === undefined) throw new BpfUsageError(`${this.description} is not pinned by this handle: give the pin path`);
    try {
      unlinkSync(path);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new BpfSyscallError(`unpin ${this.description} at ${path}`, Math.abs(e.errno ?? 0));
    }
    if (path === this.pinnedAt) this.pinnedAt = undefined;
  }

  /**
   * Ends the attachment now (`BPF_LINK_DETACH`), even when the link is pinned,
   * then closes this handle. A pin stays behind as a defunct link until
   * {@link unpin}.
   */
  detach(): void {
    this.live('detach');
    const attr = Buffer.alloc(8);
    attr.writeUInt32LE(this.fd, 0);
    check(bpf(Cmd.LinkDetach, attr), () => `detach ${this.description}`);
    this.close();
  }

  /** Drops this handle. An unpinned link detaches; a pinned link stays attached. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }
}
