/**
 * tcx (Linux 6.6+): TC ingress/egress hooks driven by BPF links, with
 * explicit ordering between programs. libbpf 1.1 has no tcx helper, so this
 * goes through the raw `BPF_LINK_CREATE` syscall.
 */
import { constants } from 'node:os';
import { addressOf, bpf, errno } from '../sys.js';
import { BpfSyscallError, BpfUsageError } from '../errors.js';
import { closeFd } from '../fd.js';
import { Program } from '../program.js';
import { AttachType, Cmd, ProgramType } from '../types.js';
import { BPF_F_AFTER, BPF_F_BEFORE, BPF_F_LINK, Link, linkCreate } from './link.js';

/** Direction of a TC hook. */
export type TcDirection = 'ingress' | 'egress';

/** Where a new tcx program goes relative to programs already on the hook. */
export interface TcxOrder {
  /** Run before this program or link (default: after every attached program). */
  before?: Program | Link;
  /** Run after this program or link. */
  after?: Program | Link;
  /** Fail with ESTALE unless the hook's revision is this one (0 or absent: do not check). */
  expectedRevision?: number | bigint;
}

/** A tcx attachment: a link with the TC attachment shape (see `TcAttachment`). */
export class TcxLink extends Link {
  readonly kind = 'tcx' as const;
  readonly direction: TcDirection;
  readonly ifindex: number;

  constructor(fd: number, ifindex: number, direction: TcDirection, description: string) {
    super(fd, description);
    this.ifindex = ifindex;
    this.direction = direction;
  }
}

/** `BPF_TCX_INGRESS` / `BPF_TCX_EGRESS`. */
export function tcxAttachType(direction: TcDirection): AttachType {
  if (direction === 'ingress') return AttachType.TcxIngress;
  if (direction === 'egress') return AttachType.TcxEgress;
  throw new BpfUsageError(`TC direction must be 'ingress' or 'egress', got ${String(direction)}`);
}

/**
 * Attaches a `SEC("tc")` program to the tcx hook of device `ifindex` (resolved
 * in the calling thread's network namespace: see `inNetns`). Several programs
 * can share a hook; `order` places this one among them. Returns the link:
 * closing it detaches unless it is pinned.
 */
export function attachTcx(program: Program, ifindex: number, direction: TcDirection, order: TcxOrder = {}): TcxLink {
  const attachType = tcxAttachType(direction);
  if (!Number.isInteger(ifindex) || ifindex <= 0) throw new BpfUsageError(`attachTcx: bad ifindex ${ifindex}`);
  if (order.before && order.after) throw new BpfUsageError('attachTcx: give before or after, not both');
  const relative = order.before ?? order.after;
  let flags = order.before ? BPF_F_BEFORE : order.after ? BPF_F_AFTER : 0;
  if (relative instanceof Link) flags |= BPF_F_LINK;
  const what = `${program.name} to ifindex ${ifindex} (tcx ${direction})`;
  const fd = linkCreate(program.fd, ifindex, attachType, flags, {
    ...(relative ? { relativeFd: relative.fd } : {}),
    ...(order.expectedRevision !== undefined ? { expectedRevision: order.expectedRevision } : {}),
    op: `attach ${what}`,
  });
  return new TcxLink(fd, ifindex, direction, `tcx link of ${what}`);
}

/** Loads `r0 = 0; exit` as a SCHED_CLS program and returns its descriptor. */
function loadTrivialSchedCls(): number {
  const insns = Buffer.from([
    0xb7, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // BPF_MOV64_IMM(BPF_REG_0, 0)
    0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // BPF_EXIT_INSN()
  ]);
  const license = Buffer.from('GPL\0');
  const attr = Buffer.alloc(128);
  attr.writeUInt32LE(ProgramType.SchedCls, 0);
  attr.writeUInt32LE(2, 4);
  attr.writeBigUInt64LE(BigInt(addressOf(insns)), 8);
  attr.writeBigUInt64LE(BigInt(addressOf(license)), 16);
  attr.write('waggle_tcx_prb', 48, 'utf8');
  const fd = bpf(Cmd.ProgLoad, attr);
  if (fd < 0) throw new BpfSyscallError('load the tcx probe program (sched_cls, 2 instructions)', errno());
  return fd;
}

let tcxSupported: boolean | undefined;

/**
 * Does the running kernel have tcx? Probed once per process, without touching
 * any device: a trivial SCHED_CLS program is attached with `BPF_LINK_CREATE`,
 * attach type `BPF_TCX_INGRESS`, to ifindex 0, which never exists.
 *
 * - Linux 6.6+ routes the request to tcx, which looks the device up and fails
 *   with ENODEV: tcx is there.
 * - Older kernels do not know SCHED_CLS links at all and fail with EINVAL
 *   (before 6.6 `link_create` has no case for the program type, and very old
 *   ones reject the attach type): no tcx.
 * - Anything else (EPERM without privileges, …) is thrown and not cached.
 *
 * (Checked on Linux 6.18: ENODEV.)
 */
export function supportsTcx(): boolean {
  if (tcxSupported !== undefined) return tcxSupported;
  const progFd = loadTrivialSchedCls();
  try {
    const attr = Buffer.alloc(64);
    attr.writeUInt32LE(progFd, 0);
    attr.writeUInt32LE(0, 4); // target_ifindex 0: no such device
    attr.writeUInt32LE(AttachType.TcxIngress, 8);
    const r = bpf(Cmd.LinkCreate, attr);
    if (r >= 0) {
      // Cannot happen (no device 0), but a link means tcx exists.
      closeFd(r);
      tcxSupported = true;
      return true;
    }
    const e = errno();
    if (e === constants.errno.ENODEV) tcxSupported = true;
    else if (e === constants.errno.EINVAL) tcxSupported = false;
    else throw new BpfSyscallError('probe for tcx (BPF_LINK_CREATE with BPF_TCX_INGRESS on ifindex 0)', e);
    return tcxSupported;
  } finally {
    closeFd(progFd);
  }
}
