/**
 * Classic TC: a `cls_bpf` filter in direct-action mode on a device's `clsact`
 * qdisc, through libbpf's netlink helpers (`bpf_tc_*`), plus {@link attachTc}
 * that prefers tcx links when the kernel has them.
 *
 * Classic TC filters are not BPF links: they cannot be pinned and they do not
 * go away when the process exits or closes its handles. A filter stays until
 * {@link TcFilter.detach} (or `tc filter del`, or the device or qdisc going
 * away). {@link TcFilter.close} only drops the handle. Use tcx when you need
 * attachments that pin, or that end with the process.
 */
import { constants } from 'node:os';
import { libbpfCalls, tcHookSize, tcOptsSize } from '../sys.js';
import { BpfError, BpfSyscallError, BpfUsageError, UnsupportedFeatureError } from '../errors.js';
import type { Program } from '../program.js';
import { closeNetns, inNetnsFd, openNetns } from '../../netlink/netns.js';
import { attachTcx, supportsTcx, type TcDirection, type TcxOrder } from './tcx.js';

export type { TcDirection } from './tcx.js';

/** `BPF_TC_INGRESS` / `BPF_TC_EGRESS` (enum bpf_tc_attach_point). */
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;

/** What both kinds of TC attachment offer. */
export interface TcAttachment {
  readonly kind: 'tcx' | 'clsact';
  /** Whether the handle is closed (by `close()` or `detach()`). */
  readonly isClosed: boolean;
  /** Removes the program from the hook and releases the handle. */
  detach(): void;
  /** Releases the handle. A tcx link detaches unless pinned; a clsact filter stays attached. */
  close(): void;
}

/** Options of {@link attachClsact}. */
export interface ClsactOptions {
  /** Filter priority, 1..65535 (default: the kernel picks one). */
  priority?: number;
  /** Filter handle (default: the kernel picks one). */
  handle?: number;
  /** Replace a filter with the same priority and handle instead of failing with EEXIST. */
  replace?: boolean;
}

interface TcHookStruct {
  sz: number;
  ifindex: number;
  attach_point: number;
  parent: number;
}

interface TcOptsStruct {
  sz: number;
  prog_fd: number;
  flags: number;
  prog_id: number;
  handle: number;
  priority: number;
}

function hookOf(ifindex: number, direction: TcDirection): TcHookStruct {
  if (direction !== 'ingress' && direction !== 'egress') {
    throw new BpfUsageError(`TC direction must be 'ingress' or 'egress', got ${String(direction)}`);
  }
  return { sz: tcHookSize, ifindex, attach_point: direction === 'ingress' ? BPF_TC_INGRESS : BPF_TC_EGRESS, parent: 0 };
}

function optsOf(fields: Partial<TcOptsStruct>): TcOptsStruct {
  return { sz: tcOptsSize, prog_fd: 0, flags: 0, prog_id: 0, handle: 0, priority: 0, ...fields };
}

/**
 * A `cls_bpf` filter attached with {@link attachClsact}. Not a link: see the
 * module comment. The handle holds a descriptor of the filter's network
 * namespace (so `detach()` works from anywhere), which keeps that namespace
 * alive until `close()` or `detach()`.
 */
export class TcFilter implements TcAttachment {
  readonly kind = 'clsact' as const;
  readonly ifindex: number;
  readonly direction: TcDirection;
  readonly handle: number;
  readonly priority: number;
  /** Id of the attached program. */
  readonly programId: number;
  /** Whether attaching created the clsact qdisc (it is left in place on detach). */
  readonly createdQdisc: boolean;
  private readonly description: string;
  /** The network namespace the filter lives in (netlink works per namespace). */
  private nsFd: number;

  /** @internal use {@link attachClsact}. */
  constructor(fields: { ifindex: number; direction: TcDirection; handle: number; priority: number; programId: number; createdQdisc: boolean; description: string; nsFd: number }) {
    this.ifindex = fields.ifindex;
    this.direction = fields.direction;
    this.handle = fields.handle;
    this.priority = fields.priority;
    this.programId = fields.programId;
    this.createdQdisc = fields.createdQdisc;
    this.description = fields.description;
    this.nsFd = fields.nsFd;
  }

  /** Whether this handle is closed. */
  get isClosed(): boolean {
    return this.nsFd < 0;
  }

  private inNs<T>(fn: () => T): T {
    if (this.nsFd < 0) throw new BpfUsageError(`${this.description}: the handle is closed`);
    return inNetnsFd(this.nsFd, fn, 'of the TC filter');
  }

  /** Is the filter still there with this program? (`bpf_tc_query`) */
  isAttached(): boolean {
    return this.inNs(() => {
      const opts = optsOf({ handle: this.handle, priority: this.priority });
      const r = libbpfCalls.tcQuery(hookOf(this.ifindex, this.direction), opts) as number;
      if (r === -constants.errno.ENOENT) return false;
      if (r < 0) throw new BpfSyscallError(`query ${this.description}`, -r);
      return opts.prog_id === this.programId;
    });
  }

  /**
   * Deletes the filter (`bpf_tc_detach`) from the namespace it was attached
   * in, wherever the caller is now, then closes the handle. A filter already
   * gone is fine; one that now runs another program is left alone and reported.
   * The clsact qdisc stays: destroying it would remove other users' filters.
   */
  detach(): void {
    this.inNs(() => {
      const hook = hookOf(this.ifindex, this.direction);
      const query = optsOf({ handle: this.handle, priority: this.priority });
      const q = libbpfCalls.tcQuery(hook, query) as number;
      if (q === -constants.errno.ENOENT) return;
      if (q < 0) throw new BpfSyscallError(`query ${this.description}`, -q);
      if (query.prog_id !== this.programId) {
        throw new BpfError('BPF_ERR_TC_REPLACED', `${this.description}: the filter now runs program ${query.prog_id}, not ${this.programId}; not detaching it`);
      }
      const r = libbpfCalls.tcDetach(hook, optsOf({ handle: this.handle, priority: this.priority })) as number;
      if (r < 0 && r !== -constants.errno.ENOENT) throw new BpfSyscallError(`detach ${this.description}`, -r);
    });
    this.close();
  }

  /** Drops the handle; the filter stays attached (classic TC filters are not links). */
  close(): void {
    if (this.nsFd < 0) return;
    closeNetns(this.nsFd);
    this.nsFd = -1;
  }
}

/**
 * Attaches a `SEC("tc")` program as a direct-action `cls_bpf` filter on the
 * `clsact` qdisc of device `ifindex`, creating the qdisc if missing. The
 * device is resolved in the calling thread's network namespace (see
 * `inNetns`); the filter remembers that namespace for {@link TcFilter.detach}.
 */
export function attachClsact(program: Program, ifindex: number, direction: TcDirection, options: ClsactOptions = {}): TcFilter {
  if (!Number.isInteger(ifindex) || ifindex <= 0) throw new BpfUsageError(`attachClsact: bad ifindex ${ifindex}`);
  const priority = options.priority ?? 0;
  const handle = options.handle ?? 0;
  if (!Number.isInteger(priority) || priority < 0 || priority > 0xffff) throw new BpfUsageError(`attachClsact: priority must be 1..65535, got ${priority}`);
  if (!Number.isInteger(handle) || handle < 0 || handle > 0xffffffff) throw new BpfUsageError(`attachClsact: bad handle ${handle}`);
  const hook = hookOf(ifindex, direction);
  const what = `${program.name} to ifindex ${ifindex} (clsact ${direction})`;

  const created = libbpfCalls.tcHookCreate(hook) as number;
  if (created < 0 && created !== -constants.errno.EEXIST) {
    throw new BpfSyscallError(`create the clsact qdisc on ifindex ${ifindex} to attach ${program.name}`, -created);
  }
  const opts = optsOf({ prog_fd: program.fd, handle, priority, flags: options.replace ? 1 /* BPF_TC_F_REPLACE */ : 0 });
  const r = libbpfCalls.tcAttach(hook, opts) as number;
  if (r < 0) throw new BpfSyscallError(`attach ${what}`, -r);
  const nsFd = openNetns();
  return new TcFilter({
    ifindex,
    direction,
    handle: opts.handle,
    priority: opts.priority,
    programId: opts.prog_id,
    createdQdisc: created === 0,
    description: `cls_bpf filter ${opts.handle}/${opts.priority} of ${what}`,
    nsFd,
  });
}

/** Options of {@link attachTc}. */
export interface TcAttachOptions extends ClsactOptions {
  /** `auto` (default): tcx when the kernel has it, else clsact. `tcx` fails on kernels without it. */
  mode?: 'auto' | 'tcx' | 'clsact';
  /**
   * tcx only: where the program goes among those already attached. (Giving
   * `priority`, `handle` or `replace` while tcx is chosen is an error, also in
   * `auto` mode: use `mode: 'clsact'` when you need them.)
   */
  order?: TcxOrder;
}

/**
 * Attaches a `SEC("tc")` program to a device's TC hook: as a tcx link when
 * the kernel supports tcx (Linux 6.6+) and `mode` allows it, else as a classic
 * clsact filter. Either way the result can be detached and closed alike;
 * check `kind` for what you got (only tcx links pin).
 */
export function attachTc(program: Program, ifindex: number, direction: TcDirection, options: TcAttachOptions = {}): TcAttachment {
  const mode = options.mode ?? 'auto';
  if (mode !== 'auto' && mode !== 'tcx' && mode !== 'clsact') throw new BpfUsageError(`attachTc: bad mode ${String(mode)}`);
  if (mode === 'tcx' || (mode === 'auto' && supportsTcx())) {
    if (mode === 'tcx' && !supportsTcx()) throw new UnsupportedFeatureError('tcx (link-based TC attachment)', '6.6');
    if (options.priority !== undefined || options.handle !== undefined || options.replace) {
      throw new BpfUsageError('attachTc: priority, handle and replace apply to clsact filters; tcx orders programs with `order`');
    }
    return attachTcx(program, ifindex, direction, options.order ?? {});
  }
  if (options.order) throw new BpfUsageError('attachTc: `order` applies to tcx links; clsact filters use priority');
  const clsact: ClsactOptions = {};
  if (options.priority !== undefined) clsact.priority = options.priority;
  if (options.handle !== undefined) clsact.handle = options.handle;
  if (options.replace !== undefined) clsact.replace = options.replace;
  return attachClsact(program, ifindex, direction, clsact);
}
