/** XDP through BPF links (`BPF_LINK_CREATE` with `BPF_XDP`). */
import type { Program } from '../program.js';
import { BpfUsageError } from '../errors.js';
import { AttachType } from '../types.js';
import { Link, linkCreate } from './link.js';

/** `XDP_FLAGS_SKB_MODE`: generic XDP, run by the network stack on socket buffers. */
export const XDP_FLAGS_SKB_MODE = 2;
/** `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver before any allocation. */
export const XDP_FLAGS_DRV_MODE = 4;

/** Where XDP runs: in the driver (fast; the device must support it) or generic (any device). */
export type XdpMode = 'driver' | 'generic';

/** Options of {@link attachXdp}. */
export interface XdpAttachOptions {
  /**
   * Required, never guessed: `driver` fails with EOPNOTSUPP on a device without
   * native XDP instead of silently falling back to the slower generic mode.
   */
  mode: XdpMode;
}

/**
 * Attaches an XDP program to device `ifindex` (resolved in the calling
 * thread's network namespace: see `inNetns`). Returns the link; closing it
 * detaches unless it is pinned. A device holds one XDP link per mode.
 */
export function attachXdp(program: Program, ifindex: number, options: XdpAttachOptions): Link {
  const mode = (options as Partial<XdpAttachOptions> | undefined)?.mode;
  if (mode !== 'driver' && mode !== 'generic') {
    throw new BpfUsageError(`attachXdp: mode must be 'driver' or 'generic', got ${String(mode)}`);
  }
  if (!Number.isInteger(ifindex) || ifindex <= 0) throw new BpfUsageError(`attachXdp: bad ifindex ${ifindex}`);
  const what = `${program.name} to ifindex ${ifindex} (xdp, ${mode} mode)`;
  const flags = mode === 'driver' ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
  const fd = linkCreate(program.fd, ifindex, AttachType.Xdp, flags, { op: `attach ${what}` });
  return new Link(fd, `xdp link of ${what}`);
}
