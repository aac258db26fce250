/**
 * The host device program (bpf/netdev.bpf.c) from the agent's side: NodePort
 * traffic that arrives from outside the node on the devices named by the
 * agent's `--devices`. The program runs on the same pinned maps as the
 * endpoint programs (services, conntrack, policy, events); one tcx ingress
 * link per device, pinned so that it keeps working while the agent is down:
 *
 * ```
 * pinDir/netdev/DEVICE   tcx link of from_netdev on DEVICE's ingress
 * ```
 *
 * {@link attachHostDevices} is what an agent calls at start: it loads the
 * program, attaches it to every configured device (in front of the link a
 * previous agent left there, which then goes: no packet unhandled in
 * between), and removes the links of devices no longer configured.
 */
import { existsSync, mkdirSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { BpfUsageError } from '../bpf/errors.js';
import { Collection } from '../bpf/object.js';
import { Link } from '../bpf/link/link.js';
import type { Program } from '../bpf/program.js';
import { attachTcx } from '../bpf/link/tcx.js';
import { getLink } from '../netlink/link.js';
import { bpfObjectPath } from './objects.js';
import { SHARED_MAPS } from './lxc.js';

/** The compiled object. */
export const NETDEV_OBJECT = 'netdev';
/** Its program. */
export const NETDEV_PROGRAM = 'from_netdev';
/** The shared maps the host device program uses (all of the endpoint programs' but `lxc_config`). */
export const NETDEV_MAPS = SHARED_MAPS.filter((m) => m !== 'lxc_config');

/** Directory of the pinned device links. */
export function netdevLinkDir(pinDir: string): string {
  return join(pinDir, 'netdev');
}

/** One host device with the program attached. */
export interface HostDeviceAttachment {
  device: string;
  ifindex: number;
  /** Where its link is pinned. */
  pinPath: string;
  /** `created`: the device had no link of ours; `replaced`: a previous agent's link was swapped for this program. */
  state: 'created' | 'replaced';
}

/** Options of {@link attachHostDevices}. */
export interface HostDeviceOptions {
  /** The agent's bpffs directory (the endpoint programs' shared maps are pinned there). */
  pinDir: string;
  /** Device names, in the calling thread's network namespace. */
  devices: readonly string[];
  /** Object file to load (default dist/bpf/netdev.bpf.o). */
  objectPath?: string;
}

/** Opens the link pinned at `path` (undefined when there is none). */
function openPin(path: string): Link | undefined {
  return existsSync(path) ? Link.openPinned(path) : undefined;
}

/** A loaded `from_netdev` (on the maps pinned under `pinDir`, created there if missing); close it when done. */
export interface LoadedHostDeviceProgram {
  program: Program;
  close(): void;
}

/** Loads bpf/netdev.bpf.o against the shared maps pinned under `pinDir`. */
export function loadHostDeviceProgram(pinDir: string, objectPath = bpfObjectPath(NETDEV_OBJECT)): LoadedHostDeviceProgram {
  if (!existsSync(objectPath)) throw new BpfUsageError(`BPF object ${objectPath} does not exist: run npm run build`);
  const coll = Collection.load(objectPath, { pinMaps: NETDEV_MAPS, pinDir, programs: [NETDEV_PROGRAM] });
  return { program: coll.program(NETDEV_PROGRAM), close: () => { coll.close(); } };
}

/**
 * Detaches and unpins the device links under `pinDir` whose device is not in
 * `keep`. Returns the devices whose links went. Safe to repeat.
 */
export function detachHostDevices(pinDir: string, keep: readonly string[] = []): string[] {
  const dir = netdevLinkDir(pinDir);
  if (!existsSync(dir)) return [];
  const removed: string[] = [];
  for (const device of readdirSync(dir)) {
    if (keep.includes(device)) continue;
    const path = join(dir, device);
    const link = Link.openPinned(path);
    try {
      if ((link.info().ifindex ?? 0) !== 0) link.detach();
    } finally {
      if (!link.isClosed) link.close();
    }
    unlinkSync(path);
    removed.push(device);
  }
  if (readdirSync(dir).length === 0) rmdirSync(dir);
  return removed;
}

/**
 * Loads bpf/netdev.bpf.o against the maps pinned under `pinDir` and attaches
 * `from_netdev` to the tcx ingress of every device in `devices`; links of
 * devices no longer listed are removed. Every device must exist, checked
 * before anything is attached (a missing one is an error naming it).
 */
export function attachHostDevices(opts: HostDeviceOptions): HostDeviceAttachment[] {
  const { pinDir, devices } = opts;
  const resolved = devices.map((device) => {
    const link = getLink(device);
    if (!link) throw new BpfUsageError(`device ${JSON.stringify(device)} (from --devices) does not exist`);
    return { device, ifindex: link.ifindex };
  });
  detachHostDevices(pinDir, devices);
  if (resolved.length === 0) return [];
  const loaded = loadHostDeviceProgram(pinDir, opts.objectPath);
  const dir = netdevLinkDir(pinDir);
  mkdirSync(dir, { recursive: true });
  const out: HostDeviceAttachment[] = [];
  try {
    const prog = loaded.program;
    for (const { device, ifindex } of resolved) {
      const pinPath = join(dir, device);
      let old = openPin(pinPath);
      if (old && old.info().ifindex !== ifindex) {
        // The device was recreated (or the link is defunct): nothing to hand over.
        if ((old.info().ifindex ?? 0) !== 0) old.detach();
        else old.close();
        unlinkSync(pinPath);
        old = undefined;
      }
      const link = attachTcx(prog, ifindex, 'ingress', old ? { before: old } : {});
      try {
        if (old) {
          old.detach();
          unlinkSync(pinPath);
        }
        link.pin(pinPath);
      } finally {
        link.close();
      }
      out.push({ device, ifindex, pinPath, state: old ? 'replaced' : 'created' });
    }
  } finally {
    loaded.close();
  }
  return out;
}

/** The device links pinned under `pinDir`: device name, ifindex (0: defunct) and program id. */
export function listHostDevices(pinDir: string): { device: string; ifindex: number; programId: number }[] {
  const dir = netdevLinkDir(pinDir);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).sort().map((device) => {
    const link = Link.openPinned(join(dir, device));
    try {
      return { device, ifindex: link.info().ifindex ?? 0, programId: link.programId };
    } finally {
      link.close();
    }
  });
}
