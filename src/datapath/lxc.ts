/**
 * The endpoint datapath (bpf/lxc.bpf.c) from the agent's side: load the two
 * endpoint programs once per agent, attach the same programs to every
 * endpoint's host-side veth, tell them who is behind each veth (the
 * `lxc_config` map), and reach the maps every endpoint shares.
 *
 * Layout under the agent's bpffs directory `pinDir`:
 *
 * ```
 * pinDir/endpoints    hash: endpoint address → endpoint_info (shared)
 * pinDir/events       ring buffer of struct flow_event (shared)
 * pinDir/metrics      per-CPU array: {reason, direction} → {packets, bytes} (shared)
 * pinDir/flow_seen    LRU hash: monitor aggregation of untracked traffic (shared)
 * pinDir/lxc_config   hash: host-side veth ifindex → lxc_config (shared)
 * pinDir/ipcache      LPM trie: IP prefix → security identity (shared)
 * pinDir/policy       LPM trie: (endpoint, direction, identity, proto, port prefix) → verdict (shared)
 * pinDir/policy_exact hash: the same for single-port entries (shared)
 * pinDir/policy_state array: the policy revision (shared)
 * pinDir/ct           LRU hash: connection tracking (shared)
 * pinDir/lb_services  hash: service frontend + slot → service / backend ID (shared with the socket programs)
 * pinDir/lb_backends  hash: backend ID → address, port, flags (shared with the socket programs)
 * pinDir/lb_maglev    hash of arrays: service ID → Maglev table (shared with the socket programs)
 * pinDir/lb_affinity  LRU hash: client + service → backend (sessionAffinity)
 * pinDir/lb_nat       LRU hash: per-packet translation, original tuple → backend (written by the datapath)
 * pinDir/lb_rev_nat   LRU hash: per-packet translation, reply tuple → service frontend (written by the datapath)
 * pinDir/lxc_programs/BUILD/from_endpoint   the shared programs, pinned
 * pinDir/lxc_programs/BUILD/to_endpoint
 * pinDir/lxc/ID/from_endpoint   tcx link on endpoint ID's host-side veth ingress
 * pinDir/lxc/ID/to_endpoint     tcx link on its egress
 * ```
 *
 * (The links live under `lxc/`, not `endpoints/`, because `endpoints` is the
 * map's pin; `lxc/` holds nothing but endpoint IDs.) Pinned links keep the
 * programs attached when the agent exits; attaching again replaces them
 * without a gap.
 *
 * BUILD names what the programs were loaded from: a hash of the object
 * file's bytes and the load-time constants (router addresses, trace
 * interval). {@link loadEndpointDatapath} reuses the programs pinned under
 * the current BUILD — after an agent restart, the same program ids — as long
 * as they still use the pinned maps; a new build (an upgrade, other router
 * addresses) loads and pins afresh, removes the pins of other builds (links
 * keep those programs alive until their endpoints are re-attached), and
 * {@link endpointAttached} then reports the endpoints as needing a new attach.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, unlinkSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { join } from 'node:path';
import { BpfUsageError } from '../bpf/errors.js';
import { formatIPv6, parseIPv4, parseIPv6, u32 } from '../bpf/codec.js';
import { Collection } from '../bpf/object.js';
import { closeFd, getPinned, programMapIds } from '../bpf/fd.js';
import { BpfMap, PerCpuMap, mapInfo } from '../bpf/map.js';
import { Program } from '../bpf/program.js';
import { RingBuffer } from '../bpf/ringbuf.js';
import { Link } from '../bpf/link/link.js';
import { attachTc, type TcAttachment } from '../bpf/link/tc.js';
import { TcxLink, type TcDirection } from '../bpf/link/tcx.js';
import { bpfObjectPath } from './objects.js';
import { endpointInfo, endpointIp, type EndpointInfo } from './codecs/endpoint.js';
import {
  FLOW_EVENT_DROP, FLOW_EVENT_POLICY_VERDICT, FLOW_EVENT_TRACE, FLOW_FAMILY_IPV4, FLOW_FAMILY_IPV6, OBS_POINT_NAMES, TCP_FLAGS, VERDICT_DROPPED, VERDICT_FORWARDED, flowEvent, type FlowEvent,
} from './codecs/flow-event.js';
import { lxcConfig, type LxcConfig } from './codecs/lxc-config.js';
import { lbNatEntry, lbNatKey, type LbNatEntry, type LbNatKey } from './codecs/lb-nat.js';
import { metricsKey, metricsValue, type MetricsKey, type MetricsValue } from './codecs/metrics.js';
import { dropReasonName } from './drop-reasons.js';

/** The compiled object. */
export const LXC_OBJECT = 'lxc';
/** The maps every endpoint's programs share, pinned under `pinDir` by name. */
export const SHARED_MAPS = [
  'endpoints', 'events', 'metrics', 'flow_seen', 'lxc_config', 'ipcache', 'policy', 'policy_exact', 'policy_state', 'ct',
  'lb_services', 'lb_backends', 'lb_maglev', 'lb_affinity', 'lb_nat', 'lb_rev_nat',
] as const;
/** Default size of the `events` ring buffer (bytes). */
export const DEFAULT_EVENTS_SIZE = 4 << 20;
/** The two endpoint programs. */
export const ENDPOINT_PROGRAMS = ['from_endpoint', 'to_endpoint'] as const;
export type EndpointProgramName = (typeof ENDPOINT_PROGRAMS)[number];

/** The agent-wide configuration of {@link loadEndpointDatapath}. */
export interface EndpointDatapathConfig {
  /** bpffs directory of the agent: shared maps and the programs are pinned (or reused) here. */
  pinDir: string;
  /** The virtual gateway every endpoint routes through (answered by ARP in eBPF). */
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

/** One endpoint, for {@link attachEndpoint}: what goes into its `lxc_config` entry and where. */
export interface EndpointConfig {
  /** The agent's endpoint ID (1..65535). */
  endpointId: number;
  /** ifindex of the endpoint's host-side veth (in the calling thread's network namespace). */
  hostIfindex: number;
  /** The endpoint's IPv4 address; without it every IPv4 packet from the endpoint is dropped as spoofed. */
  ipv4?: string;
  /** The endpoint's IPv6 address; without it only link-local ICMPv6 control traffic passes. */
  ipv6?: string;
  /** The endpoint's MAC (its eth0), `aa:bb:cc:dd:ee:ff`. */
  mac: string;
  /** The host-side veth's MAC: the router MAC the endpoint sees. */
  hostMac: string;
  /** The endpoint's security identity. */
  identity: number;
  /** `LXC_CONFIG_F_POLICY_*`: directions in which the endpoint has policy (default none: everything allowed). */
  policyFlags?: number;
}

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

function checkMac(text: string, what: string): string {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new BpfUsageError(`${what}: not a MAC address: ${JSON.stringify(text)}`);
  }
  return text.toLowerCase();
}

function checkEndpointId(endpointId: number): void {
  if (!Number.isInteger(endpointId) || endpointId < 1 || endpointId > 0xffff) {
    throw new BpfUsageError(`endpointId must be an integer in 1..65535, got ${endpointId}`);
  }
}

/** The `lxc_config` entry of an endpoint (addresses normalised as the map's codec prints them). */
export function lxcConfigOf(ep: EndpointConfig): LxcConfig {
  checkEndpointId(ep.endpointId);
  return {
    endpointId: ep.endpointId,
    ipv4: Array.from(ipv4Bytes(ep.ipv4, 'ipv4')).join('.'),
    ipv6: formatIPv6(ipv6Bytes(ep.ipv6, 'ipv6')),
    mac: checkMac(ep.mac, 'mac'),
    hostMac: checkMac(ep.hostMac, 'hostMac'),
    flags: ep.policyFlags ?? 0,
    identity: ep.identity,
  };
}

const sameConfig = (a: LxcConfig, b: LxcConfig): boolean =>
  a.endpointId === b.endpointId && a.ipv4 === b.ipv4 && a.ipv6 === b.ipv6 && a.mac === b.mac && a.hostMac === b.hostMac &&
  a.flags === b.flags && a.identity === b.identity;

/** Directory of the pinned shared programs (one subdirectory per build). */
export function endpointProgramsDir(pinDir: string): string {
  return join(pinDir, 'lxc_programs');
}

/** Ids of the shared maps pinned under `pinDir` (undefined when one is missing). */
function pinnedMapIds(pinDir: string): Map<string, number> | undefined {
  const ids = new Map<string, number>();
  for (const name of SHARED_MAPS) {
    const path = join(pinDir, name);
    if (!existsSync(path)) return undefined;
    const fd = getPinned(path, 'map');
    try {
      ids.set(name, mapInfo(fd).id);
    } finally {
      closeFd(fd);
    }
  }
  return ids;
}

function removeProgramPins(dir: string): void {
  if (!existsSync(dir)) return;
  for (const f of readdirSync(dir)) unlinkSync(join(dir, f));
  rmdirSync(dir);
}

/**
 * The endpoint programs of one agent, loaded once and attached to every
 * endpoint's veth, plus the `lxc_config` map that tells them apart. From
 * {@link loadEndpointDatapath}; close it when done (the pinned programs and
 * everything attached stay).
 */
export class EndpointDatapath {
  readonly pinDir: string;
  /** Where the programs are pinned (`pinDir/lxc_programs/BUILD`). */
  readonly programDir: string;
  /** True when the programs were found pinned and reused, false when loaded now. */
  readonly reused: boolean;
  private readonly programs: ReadonlyMap<EndpointProgramName, Program>;
  private readonly configMap: BpfMap<number, LxcConfig>;
  private closed = false;

  /** @internal use {@link loadEndpointDatapath}. */
  constructor(pinDir: string, programDir: string, reused: boolean, programs: ReadonlyMap<EndpointProgramName, Program>) {
    this.pinDir = pinDir;
    this.programDir = programDir;
    this.reused = reused;
    this.programs = programs;
    this.configMap = lxcConfigMap(pinDir);
  }

  /** `from_endpoint` or `to_endpoint`. */
  program(name: EndpointProgramName): Program {
    if (this.closed) throw new BpfUsageError('endpoint datapath is closed');
    const p = this.programs.get(name);
    if (!p) throw new BpfUsageError(`no endpoint program ${String(name)}`);
    return p;
  }

  /** The `lxc_config` map (owned by this handle: do not close it). */
  get config(): BpfMap<number, LxcConfig> {
    if (this.closed) throw new BpfUsageError('endpoint datapath is closed');
    return this.configMap;
  }

  /** Closes the handles; pinned programs, links and maps stay in the kernel. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.programs.values()) p.close();
    this.configMap.close();
  }
}

/** Opens the programs pinned in `dir` if both are there and use the maps pinned under `pinDir` now. */
function openPinnedPrograms(pinDir: string, dir: string, eventsSize: number | undefined): Map<EndpointProgramName, Program> | undefined {
  if (!ENDPOINT_PROGRAMS.every((name) => existsSync(join(dir, name)))) return undefined;
  const mapIds = pinnedMapIds(pinDir);
  if (!mapIds) return undefined;
  if (eventsSize !== undefined) {
    const fd = getPinned(join(pinDir, 'events'), 'map');
    try {
      // A different size: load, so that the map's incompatibility is reported as it always was.
      if (mapInfo(fd).maxEntries !== eventsSize) return undefined;
    } finally {
      closeFd(fd);
    }
  }
  const programs = new Map<EndpointProgramName, Program>();
  try {
    const used = new Set<number>();
    for (const name of ENDPOINT_PROGRAMS) {
      const p = Program.openPinned(join(dir, name));
      programs.set(name, p);
      for (const id of programMapIds(p.fd)) used.add(id);
    }
    // Programs bound to maps that are no longer the pinned ones (a map pin was removed and made anew) would
    // write where nobody reads: load afresh instead.
    if ([...mapIds.values()].every((id) => used.has(id))) return programs;
  } catch (err) {
    for (const p of programs.values()) p.close();
    throw err;
  }
  for (const p of programs.values()) p.close();
  return undefined;
}

/**
 * Loads bpf/lxc.bpf.o once for the agent at `pinDir`, or reuses the programs
 * a previous load pinned there (same object, same constants, same maps: see
 * the module doc). The shared maps are pinned under `pinDir` (or reused from
 * there), the programs under `pinDir/lxc_programs/BUILD/`. Attach endpoints
 * with {@link attachEndpoint}. All or nothing.
 */
export function loadEndpointDatapath(config: EndpointDatapathConfig): EndpointDatapath {
  const { pinDir } = config;
  const objectPath = config.objectPath ?? bpfObjectPath(LXC_OBJECT);
  const constants = {
    router_ipv4: ipv4Bytes(config.routerIpv4, 'routerIpv4'),
    router_ipv6: ipv6Bytes(config.routerIpv6, 'routerIpv6'),
    ...(config.traceIntervalNs !== undefined ? { trace_interval_ns: config.traceIntervalNs } : {}),
  };
  if (!existsSync(objectPath)) throw new BpfUsageError(`BPF object ${objectPath} does not exist: run npm run build`);
  const build = createHash('sha256')
    .update(readFileSync(objectPath))
    .update(JSON.stringify(Object.entries(constants).map(([k, v]) => [k, typeof v === 'number' ? v : Array.from(v)])))
    .digest('hex')
    .slice(0, 16);
  const programsDir = endpointProgramsDir(pinDir);
  const dir = join(programsDir, build);

  let programs = existsSync(dir) ? openPinnedPrograms(pinDir, dir, config.eventsSize) : undefined;
  const reused = programs !== undefined;
  if (!programs) {
    const coll = Collection.load(objectPath, {
      constants,
      pinMaps: SHARED_MAPS,
      pinDir,
      programs: ENDPOINT_PROGRAMS,
      ...(config.eventsSize !== undefined ? { maxEntries: { events: config.eventsSize } } : {}),
    });
    const loaded = new Map<EndpointProgramName, Program>();
    try {
      for (const name of ENDPOINT_PROGRAMS) {
        const p = coll.program(name);
        loaded.set(name, new Program(Program.dup(p.fd, `program ${name}`), p.name, p.type, p.expectedAttachType));
      }
      // Pins of an incomplete or stale attempt at this build go first.
      removeProgramPins(dir);
      mkdirSync(dir, { recursive: true });
      for (const name of ENDPOINT_PROGRAMS) (loaded.get(name) as Program).pin(join(dir, name));
    } catch (err) {
      for (const p of loaded.values()) p.close();
      try { removeProgramPins(dir); } catch { /* reported below */ }
      throw err;
    } finally {
      coll.close();
    }
    programs = loaded;
  }
  // Other builds' pins go: links hold on to their programs until re-attached.
  for (const other of existsSync(programsDir) ? readdirSync(programsDir) : []) {
    if (other !== build) removeProgramPins(join(programsDir, other));
  }
  try {
    return new EndpointDatapath(pinDir, dir, reused, programs);
  } catch (err) {
    for (const p of programs.values()) p.close();
    throw err;
  }
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

const ATTACH_POINTS: readonly { program: EndpointProgramName; direction: TcDirection }[] = [
  { program: 'from_endpoint', direction: 'ingress' },
  { program: 'to_endpoint', direction: 'egress' },
];

/** Opens the link pinned at `path` if it is still attached to `ifindex`; removes a stale pin. */
function openReplaceable(path: string, ifindex: number): { link?: Link; stale: boolean } {
  if (!existsSync(path)) return { stale: false };
  const old = Link.openPinned(path);
  if (old.info().ifindex === ifindex) return { link: old, stale: false };
  // Defunct (device gone, or detached) or on another device: nothing to hand over.
  old.unpin();
  old.close();
  return { stale: true };
}

/** Removes the `lxc_config` entries of `endpointId` except the one at `keep`. */
function deleteConfigEntries(map: BpfMap<number, LxcConfig>, endpointId: number, keep?: number): void {
  const doomed: number[] = [];
  for (const [ifindex, cfg] of map.entries()) if (cfg.endpointId === endpointId && ifindex !== keep) doomed.push(ifindex);
  for (const ifindex of doomed) map.delete(ifindex);
}

/**
 * Attaches the shared programs of `dp` to endpoint `ep`'s host-side veth
 * `ep.hostIfindex` (resolved in the calling thread's network namespace: use
 * `inNetns`): first its `lxc_config` entry is written, then `from_endpoint`
 * goes on the ingress and `to_endpoint` on the egress. tcx links (chosen
 * where the kernel has them) are pinned under `pinDir/lxc/ID/` so they
 * survive an agent restart.
 *
 * When links are already pinned there for the same device (an agent
 * restart, or new programs), the new programs are attached in front of the
 * old ones, which are then detached: no packet goes unhandled in between.
 * Attaching the programs that are already attached keeps their links. On
 * failure the `lxc_config` entry is put back as it was.
 */
export function attachEndpoint(dp: EndpointDatapath, ep: EndpointConfig): EndpointAttachments {
  const value = lxcConfigOf(ep);
  const { hostIfindex, endpointId } = ep;
  if (!Number.isInteger(hostIfindex) || hostIfindex <= 0) throw new BpfUsageError(`hostIfindex must be a positive integer, got ${hostIfindex}`);
  const map = dp.config;
  const previous = map.lookup(hostIfindex);
  map.update(hostIfindex, value);
  const dir = endpointLinkDir(dp.pinDir, endpointId);
  const done: TcAttachment[] = [];
  const pins: string[] = [];
  let stale = false;
  try {
    for (const { program, direction } of ATTACH_POINTS) {
      const path = join(dir, program);
      const prog = dp.program(program);
      const found = openReplaceable(path, hostIfindex);
      const old = found.link;
      stale ||= found.stale;
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
    // pins keep describing what runs. The entry goes back unless a pinned
    // link on this device may still need the new one.
    for (const a of done) if (!a.isClosed) a.close();
    if (pins.length === 0) {
      if (previous) map.update(hostIfindex, previous);
      else map.delete(hostIfindex);
    }
    throw err;
  }
  // The endpoint's links were on a device that is gone: so is its entry there.
  if (stale) deleteConfigEntries(map, endpointId, hostIfindex);
  const [ingress, egress] = done as [TcAttachment, TcAttachment];
  return {
    ingress,
    egress,
    ...(pins.length === 2 ? { pinnedAt: { ingress: pins[0] as string, egress: pins[1] as string } } : {}),
  };
}

/**
 * Does endpoint `ep` run on `dp`: both of its pinned links attached to its
 * veth with `dp`'s programs, and its `lxc_config` entry as `ep` says?
 */
export function endpointAttached(dp: EndpointDatapath, ep: EndpointConfig): boolean {
  const dir = endpointLinkDir(dp.pinDir, ep.endpointId);
  const linked = ATTACH_POINTS.every(({ program }) => {
    const path = join(dir, program);
    if (!existsSync(path)) return false;
    const link = Link.openPinned(path);
    try {
      return link.info().ifindex === ep.hostIfindex && link.programId === dp.program(program).info().id;
    } finally {
      link.close();
    }
  });
  if (!linked) return false;
  const cfg = dp.config.lookup(ep.hostIfindex);
  return cfg !== undefined && sameConfig(cfg, lxcConfigOf(ep));
}

/**
 * Detaches endpoint `endpointId`'s pinned links, removes their pins (and the
 * directory), then its `lxc_config` entry. Returns how many links were
 * detached. Safe to repeat.
 */
export function detachEndpointPrograms(pinDir: string, endpointId: number): number {
  const dir = endpointLinkDir(pinDir, endpointId);
  let n = 0;
  const devices = new Set<number>();
  for (const { program } of ATTACH_POINTS) {
    const path = join(dir, program);
    if (!existsSync(path)) continue;
    const link = Link.openPinned(path);
    const ifindex = link.info().ifindex ?? 0;
    if (ifindex !== 0) {
      devices.add(ifindex);
      link.detach();
      n++;
    } else {
      link.close();
    }
    unlinkSync(path);
  }
  if (existsSync(dir)) rmdirSync(dir);
  if (existsSync(join(pinDir, 'lxc_config'))) {
    const map = lxcConfigMap(pinDir);
    try {
      if (devices.size > 0) {
        for (const ifindex of devices) if (map.lookup(ifindex)?.endpointId === endpointId) map.delete(ifindex);
      } else {
        // No live link says where the endpoint was: look for its entries.
        deleteConfigEntries(map, endpointId);
      }
    } finally {
      map.close();
    }
  }
  return n;
}

/** The shared `lxc_config` map pinned under `pinDir`, keyed by host-side ifindex. Close it when done. */
export function lxcConfigMap(pinDir: string): BpfMap<number, LxcConfig> {
  return BpfMap.openPinned(join(pinDir, 'lxc_config'), u32, lxcConfig);
}

/** The shared `endpoints` map pinned under `pinDir`, keyed by IP address text. Close it when done. */
export function endpointsMap(pinDir: string): BpfMap<string, EndpointInfo> {
  return BpfMap.openPinned(join(pinDir, 'endpoints'), endpointIp, endpointInfo);
}

/**
 * The per-packet service translation maps pinned under `pinDir`: `lb_nat`
 * (original tuple client → frontend ⇒ backend) and `lb_rev_nat` (reply tuple
 * backend → client ⇒ frontend). The datapath writes them. Close both when done.
 */
export function lbNatMaps(pinDir: string): { nat: BpfMap<LbNatKey, LbNatEntry>; revNat: BpfMap<LbNatKey, LbNatEntry> } {
  const nat = BpfMap.openPinned(join(pinDir, 'lb_nat'), lbNatKey, lbNatEntry);
  try {
    return { nat, revNat: BpfMap.openPinned(join(pinDir, 'lb_rev_nat'), lbNatKey, lbNatEntry) };
  } catch (err) {
    nat.close();
    throw err;
  }
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

const TYPE_NAMES: Record<number, string> = { [FLOW_EVENT_DROP]: 'DROP', [FLOW_EVENT_TRACE]: 'TRACE', [FLOW_EVENT_POLICY_VERDICT]: 'POLICY_VERDICT' };
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
    obsPointName: OBS_POINT_NAMES[e.obsPoint] ?? `UNKNOWN_POINT(${e.obsPoint})`,
    verdictName: VERDICT_NAMES[e.verdict] ?? `VERDICT_UNKNOWN(${e.verdict})`,
    dropReasonName: dropReasonName(e.dropReason),
    ipVersion: e.family === FLOW_FAMILY_IPV4 ? 4 : e.family === FLOW_FAMILY_IPV6 ? 6 : undefined,
    srcIp: addressText(e.family, e.srcAddr),
    dstIp: addressText(e.family, e.dstAddr),
    tcpFlagNames: e.ipProto === 6 ? Object.entries(TCP_FLAGS).filter(([, bit]) => (e.tcpFlags & bit) !== 0).map(([n]) => n) : [],
  };
}
