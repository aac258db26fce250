/**
 * The endpoint datapath (bpf/lxc.bpf.c) from the agent's side: load the
 * programs for one endpoint with its load-time constants, attach them to the
 * endpoint's host-side veth, and reach the maps every endpoint shares.
 *
 * Layout under the agent's bpffs directory `pinDir`:
 *
 * ```
 * pinDir/endpoints   hash: endpoint address → endpoint_info (shared)
 * pinDir/events      ring buffer of struct flow_event (shared)
 * pinDir/metrics     per-CPU hash: {reason, direction} → {packets, bytes} (shared)
 * pinDir/flow_seen   LRU hash: monitor aggregation state (shared)
 * pinDir/lxc/ID/from_endpoint   tcx link on the host-side veth's ingress
 * pinDir/lxc/ID/to_endpoint     tcx link on the host-side veth's egress
 * ```
 *
 * (The links live under `lxc/`, not `endpoints/`, because `endpoints` is the
 * map's pin.) Pinned links keep the programs attached when the agent exits;
 * attaching again replaces them without a gap.
 */
import { existsSync, mkdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { join } from 'node:path';
import { BpfUsageError } from '../bpf/errors.js';
import { formatIPv6, parseIPv4, parseIPv6 } from '../bpf/codec.js';
import { Collection } from '../bpf/object.js';
import { closeFd, getPinned } from '../bpf/fd.js';
import { BpfMap, PerCpuMap } from '../bpf/map.js';
import { RingBuffer } from '../bpf/ringbuf.js';
import { Link } from '../bpf/link/link.js';
import { attachTc, type TcAttachment } from '../bpf/link/tc.js';
import { TcxLink, type TcDirection } from '../bpf/link/tcx.js';
import { bpfObjectPath } from './objects.js';
import { endpointInfo, endpointIp, type EndpointInfo } from './codecs/endpoint.js';
import {
  FLOW_EVENT_DROP, FLOW_EVENT_TRACE, FLOW_FAMILY_IPV4, FLOW_FAMILY_IPV6, OBS_FROM_ENDPOINT, OBS_TO_ENDPOINT,
  OBS_TO_STACK, TCP_FLAGS, VERDICT_DROPPED, VERDICT_FORWARDED, flowEvent, type FlowEvent,
} from './codecs/flow-event.js';
import { metricsKey, metricsValue, type MetricsKey, type MetricsValue } from './codecs/metrics.js';
import { dropReasonName } from './drop-reasons.js';

/** The compiled object. */
export const LXC_OBJECT = 'lxc';
/** The maps every endpoint's programs share, pinned under `pinDir` by name. */
export const SHARED_MAPS = ['endpoints', 'events', 'metrics', 'flow_seen'] as const;
/** Default size of the `events` ring buffer (bytes). */
export const DEFAULT_EVENTS_SIZE = 4 << 20;

/** One endpoint's configuration for {@link loadEndpointPrograms}. */
export interface EndpointProgramsConfig {
  /** bpffs directory of the agent: shared maps are pinned (or reused) here. */
  pinDir: string;
  /** The agent's endpoint ID (1..65535). */
  endpointId: number;
  /** The endpoint's IPv4 address; without it every IPv4 packet from the endpoint is dropped as spoofed. */
  ipv4?: string;
  /** The endpoint's IPv6 address; without it only link-local ICMPv6 control traffic passes. */
  ipv6?: string;
  /** The endpoint's MAC (its eth0), `aa:bb:cc:dd:ee:ff`. */
  mac: string;
  /** The host-side veth's MAC: the router MAC the endpoint sees. */
  hostMac: string;
  /** The virtual gateway the endpoint routes through (answered by ARP in eBPF). */
  routerIpv4?: string;
  /** The virtual IPv6 gateway (answered by neighbor discovery in eBPF). */
  routerIpv6?: string;
  /** Shortest gap between two trace events of one flow, ns (default 1 s; 0 traces every packet). */
  traceIntervalNs?: number;
  /** Size of the shared `events` ring buffer in bytes (a power of two; must match an existing pin). */
  eventsSize?: number;
  /** Object file to load (default dist/bpf/lxc.bpf.o). */
  objectPath?: string;
}

interface LoadedEndpoint {
  pinDir: string;
  endpointId: number;
}

/** What each collection from {@link loadEndpointPrograms} was loaded for. */
const loadedFor = new WeakMap<Collection, LoadedEndpoint>();

function ipv4Bytes(ip: string | undefined, what: string): Uint8Array {
  if (ip === undefined) return new Uint8Array(4);
  if (!isIPv4(ip)) throw new BpfUsageError(`${what}: not an IPv4 address: ${JSON.stringify(ip)}`);
  return parseIPv4(ip);
}

function ipv6Bytes(ip: string | undefined, what: string): Uint8Array {
  if (ip === undefined) return new Uint8Array(16);
  if (!isIPv6(ip)) throw new BpfUsageError(`${what}: not an IPv6 address: ${JSON.stringify(ip)}`);
  return parseIPv6(ip);
}

function macBytes(text: string, what: string): Uint8Array {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new BpfUsageError(`${what}: not a MAC address: ${JSON.stringify(text)}`);
  }
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

/**
 * Loads bpf/lxc.bpf.o for one endpoint: its identity goes into the
 * `const volatile` constants, and the shared maps are pinned under
 * `pinDir` (or reused from there when they already exist). Returns the
 * collection with programs `from_endpoint` and `to_endpoint`; attach it with
 * {@link attachEndpointPrograms}. All or nothing.
 */
export function loadEndpointPrograms(config: EndpointProgramsConfig): Collection {
  const { pinDir, endpointId } = config;
  if (!Number.isInteger(endpointId) || endpointId < 1 || endpointId > 0xffff) {
    throw new BpfUsageError(`endpointId must be an integer in 1..65535, got ${endpointId}`);
  }
  const constants = {
    endpoint_id: endpointId,
    ep_ipv4: ipv4Bytes(config.ipv4, 'ipv4'),
    ep_ipv6: ipv6Bytes(config.ipv6, 'ipv6'),
    ep_mac: macBytes(config.mac, 'mac'),
    host_mac: macBytes(config.hostMac, 'hostMac'),
    router_ipv4: ipv4Bytes(config.routerIpv4, 'routerIpv4'),
    router_ipv6: ipv6Bytes(config.routerIpv6, 'routerIpv6'),
    ...(config.traceIntervalNs !== undefined ? { trace_interval_ns: config.traceIntervalNs } : {}),
  };
  const coll = Collection.load(config.objectPath ?? bpfObjectPath(LXC_OBJECT), {
    constants,
    pinMaps: SHARED_MAPS,
    pinDir,
    ...(config.eventsSize !== undefined ? { maxEntries: { events: config.eventsSize } } : {}),
  });
  loadedFor.set(coll, { pinDir, endpointId });
  return coll;
}

/** The two attachments of one endpoint. */
export interface EndpointAttachments {
  /** `from_endpoint` on the host-side veth's ingress. */
  ingress: TcAttachment;
  /** `to_endpoint` on the host-side veth's egress. */
  egress: TcAttachment;
  /** Where the links are pinned (absent when the kernel has no tcx and clsact filters were used). */
  pinnedAt?: { ingress: string; egress: string };
}

/** Directory of endpoint `endpointId`'s pinned links. */
export function endpointLinkDir(pinDir: string, endpointId: number): string {
  return join(pinDir, 'lxc', String(endpointId));
}

const ATTACH_POINTS: readonly { program: string; direction: TcDirection }[] = [
  { program: 'from_endpoint', direction: 'ingress' },
  { program: 'to_endpoint', direction: 'egress' },
];

/** Opens the link pinned at `path` if it is still attached to `ifindex`; removes a stale pin. */
function openReplaceable(path: string, ifindex: number): Link | undefined {
  if (!existsSync(path)) return undefined;
  const old = Link.openPinned(path);
  if (old.info().ifindex === ifindex) return old;
  // Defunct (device gone, or detached) or on another device: nothing to hand over.
  old.unpin();
  old.close();
  return undefined;
}

/**
 * Attaches `from_endpoint` (ingress) and `to_endpoint` (egress) of a
 * collection from {@link loadEndpointPrograms} to the endpoint's host-side
 * veth `hostIfindex`, which is resolved in the calling thread's network
 * namespace (use `inNetns`). tcx links (chosen where the kernel has them)
 * are pinned under `pinDir/lxc/ID/` so they survive an agent restart.
 *
 * When links are already pinned there for the same device (an agent
 * restart, or new programs), the new programs are attached in front of the
 * old ones, which are then detached: no packet goes unhandled in between.
 * Attaching the programs that are already attached keeps their links.
 *
 * `where` overrides the pin directory and endpoint ID remembered from the load.
 */
export function attachEndpointPrograms(coll: Collection, hostIfindex: number, where: Partial<LoadedEndpoint> = {}): EndpointAttachments {
  const loaded = loadedFor.get(coll);
  const pinDir = where.pinDir ?? loaded?.pinDir;
  const endpointId = where.endpointId ?? loaded?.endpointId;
  if (pinDir === undefined || endpointId === undefined) {
    throw new BpfUsageError('attachEndpointPrograms: the collection was not loaded by loadEndpointPrograms; pass { pinDir, endpointId }');
  }
  const dir = endpointLinkDir(pinDir, endpointId);
  const done: TcAttachment[] = [];
  const pins: string[] = [];
  try {
    for (const { program, direction } of ATTACH_POINTS) {
      const path = join(dir, program);
      const prog = coll.program(program);
      const old = openReplaceable(path, hostIfindex);
      if (old && old.programId === prog.info().id) {
        // Already attached with this very program (tcx refuses a duplicate): keep that link.
        old.close();
        done.push(new TcxLink(getPinned(path, 'link'), hostIfindex, direction, `tcx link of ${program} to ifindex ${hostIfindex} (tcx ${direction})`));
        pins.push(path);
        continue;
      }
      let att: TcAttachment;
      try {
        att = attachTc(prog, hostIfindex, direction, {
          mode: 'auto',
          ...(old ? { order: { before: old } } : {}),
        });
      } catch (err) {
        old?.close();
        throw err;
      }
      done.push(att);
      if (old) {
        old.detach();
        old.unpin(path);
      }
      if (att.kind === 'tcx') {
        mkdirSync(dir, { recursive: true });
        (att as TcxLink).pin(path);
        pins.push(path);
      }
    }
  } catch (err) {
    // Only handles are dropped: whatever is pinned stays attached, so the
    // pins keep describing what runs.
    for (const a of done) if (!a.isClosed) a.close();
    throw err;
  }
  const [ingress, egress] = done as [TcAttachment, TcAttachment];
  return {
    ingress,
    egress,
    ...(pins.length === 2 ? { pinnedAt: { ingress: pins[0] as string, egress: pins[1] as string } } : {}),
  };
}

/**
 * Detaches endpoint `endpointId`'s pinned links and removes their pins (and
 * the directory). Returns how many links were detached. Safe to repeat.
 */
export function detachEndpointPrograms(pinDir: string, endpointId: number): number {
  const dir = endpointLinkDir(pinDir, endpointId);
  let n = 0;
  for (const { program } of ATTACH_POINTS) {
    const path = join(dir, program);
    if (!existsSync(path)) continue;
    const link = Link.openPinned(path);
    if (link.info().ifindex !== 0) {
      link.detach();
      n++;
    } else {
      link.close();
    }
    unlinkSync(path);
  }
  if (existsSync(dir)) rmdirSync(dir);
  return n;
}

/** The shared `endpoints` map pinned under `pinDir`, keyed by IP address text. Close it when done. */
export function endpointsMap(pinDir: string): BpfMap<string, EndpointInfo> {
  return BpfMap.openPinned(join(pinDir, 'endpoints'), endpointIp, endpointInfo);
}

/** The shared per-CPU `metrics` map pinned under `pinDir`. Close it when done. */
export function metricsMap(pinDir: string): PerCpuMap<MetricsKey, MetricsValue> {
  return PerCpuMap.openPinned(join(pinDir, 'metrics'), metricsKey, metricsValue);
}

/** A reader of the shared `events` ring buffer pinned under `pinDir`. One reader per ring. */
export function openEvents(pinDir: string): RingBuffer {
  const fd = getPinned(join(pinDir, 'events'), 'map');
  try {
    return RingBuffer.open(fd);
  } finally {
    closeFd(fd);
  }
}

/** A flow event with its numbers named and its addresses as text. */
export interface DecodedFlowEvent extends FlowEvent {
  /** `DROP`, `TRACE` or `UNKNOWN(n)`. */
  typeName: string;
  /** Hubble's TraceObservationPoint name (`TO_ENDPOINT`, …). */
  obsPointName: string;
  /** Hubble's verdict name (`FORWARDED`, `DROPPED`). */
  verdictName: string;
  /** Hubble's DropReason name (`DROP_REASON_UNKNOWN` for traces). */
  dropReasonName: string;
  /** 4, 6, or undefined for non-IP packets. */
  ipVersion: 4 | 6 | undefined;
  srcIp: string | undefined;
  dstIp: string | undefined;
  /** Names of the TCP flags set (`SYN`, `ACK`, …), TCP only. */
  tcpFlagNames: string[];
}

const OBS_NAMES: Record<number, string> = {
  [OBS_TO_STACK]: 'TO_STACK', [OBS_FROM_ENDPOINT]: 'FROM_ENDPOINT', [OBS_TO_ENDPOINT]: 'TO_ENDPOINT',
};
const TYPE_NAMES: Record<number, string> = { [FLOW_EVENT_DROP]: 'DROP', [FLOW_EVENT_TRACE]: 'TRACE' };
const VERDICT_NAMES: Record<number, string> = { [VERDICT_FORWARDED]: 'FORWARDED', [VERDICT_DROPPED]: 'DROPPED' };

function addressText(family: number, addr: Uint8Array): string | undefined {
  if (family === FLOW_FAMILY_IPV4) return Array.from(addr.subarray(0, 4)).join('.');
  if (family === FLOW_FAMILY_IPV6) return formatIPv6(addr);
  return undefined;
}

/** Decodes one `struct flow_event` record (e.g. from a {@link RingBuffer} callback). */
export function decodeFlowEvent(buf: Buffer, offset = 0): DecodedFlowEvent {
  if (buf.length - offset < flowEvent.size) {
    throw new BpfUsageError(`flow event record too short: ${buf.length - offset} bytes, need ${flowEvent.size}`);
  }
  const e = flowEvent.decode(buf, offset);
  return {
    ...e,
    typeName: TYPE_NAMES[e.type] ?? `UNKNOWN(${e.type})`,
    obsPointName: OBS_NAMES[e.obsPoint] ?? `UNKNOWN_POINT(${e.obsPoint})`,
    verdictName: VERDICT_NAMES[e.verdict] ?? `VERDICT_UNKNOWN(${e.verdict})`,
    dropReasonName: dropReasonName(e.dropReason),
    ipVersion: e.family === FLOW_FAMILY_IPV4 ? 4 : e.family === FLOW_FAMILY_IPV6 ? 6 : undefined,
    srcIp: addressText(e.family, e.srcAddr),
    dstIp: addressText(e.family, e.dstAddr),
    tcpFlagNames: e.ipProto === 6 ? Object.entries(TCP_FLAGS).filter(([, bit]) => (e.tcpFlags & bit) !== 0).map(([n]) => n) : [],
  };
}
