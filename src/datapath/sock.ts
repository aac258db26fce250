/**
 * Socket-level service load balancing (bpf/sock.bpf.c) from the agent's
 * side: load the eight cgroup sock_addr programs against the service maps
 * pinned under the agent's bpffs directory, attach them to the agent's
 * cgroup root with BPF links, pin the links, and re-adopt them after a
 * restart.
 *
 * Layout under `pinDir`:
 *
 * ```
 * pinDir/lb_services     hash: (frontend, slot) → service / backend id (shared with the endpoint programs)
 * pinDir/lb_backends     hash: backend id → address (shared)
 * pinDir/lb_maglev       hash of maps: service id → Maglev table (shared)
 * pinDir/lb_affinity     LRU hash: (client, service id) → backend (shared)
 * pinDir/lb_sock_revnat  LRU hash: (socket cookie, backend) → service address (socket programs only)
 * pinDir/lb_sock_udp     LRU hash: (socket cookie, service) → backend of an unconnected UDP socket
 * pinDir/lb_sock_stats   per-CPU array: counters (see {@link SOCK_LB_STATS})
 * pinDir/sock_lb/HOOK    the cgroup link of hook HOOK (connect4, …, getpeername6)
 * ```
 *
 * The links keep the programs attached while the agent is away. Attaching
 * again ({@link attachSocketLb}) loads the object, and for each hook keeps a
 * pinned link that already runs the same program (same instructions, same
 * maps), swaps the program of a pinned link on the same cgroup in place
 * (`BPF_LINK_UPDATE`: no moment without the hook) or makes a new link.
 * Detaching ({@link detachSocketLb}) leaves the maps: the endpoint programs
 * share the service maps, and reverse entries keep `getpeername` right for
 * connections made before.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statfsSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { BpfSyscallError, BpfUsageError } from '../bpf/errors.js';
import { be16, bytes, formatIPv6, struct, u32, u64, u8, type StructCodec } from '../bpf/codec.js';
import { check, closeFd, objectInfo, programMapIds } from '../bpf/fd.js';
import { BpfMap, PerCpuMap } from '../bpf/map.js';
import { Collection } from '../bpf/object.js';
import type { Program } from '../bpf/program.js';
import { bpf } from '../bpf/sys.js';
import { Cmd } from '../bpf/types.js';
import { Link, LinkType } from '../bpf/link/link.js';
import { attachCgroup, sockAddrAttachType, type SockAddrHook } from '../bpf/link/cgroup.js';
import { bpfObjectPath } from './objects.js';

/** The compiled object (dist/bpf/sock.bpf.o). */
export const SOCK_LB_OBJECT = 'sock';
/** The hooks, in the order they are attached. */
export const SOCK_LB_HOOKS: readonly SockAddrHook[] = [
  'connect4', 'connect6', 'sendmsg4', 'sendmsg6', 'recvmsg4', 'recvmsg6', 'getpeername4', 'getpeername6',
];
/** The service maps the socket programs share with the endpoint programs (pinned by name). */
export const LB_SHARED_MAPS = ['lb_services', 'lb_backends', 'lb_maglev', 'lb_affinity'] as const;
/** The maps only the socket programs use (pinned by name too). */
export const SOCK_LB_MAPS = ['lb_sock_revnat', 'lb_sock_udp', 'lb_sock_stats'] as const;
/** `lb_sock_stats` indexes (`enum lb_sock_stat` of bpf/lib/lb_sock.h), by name. */
export const SOCK_LB_STATS = ['connectTranslated', 'sendmsgTranslated', 'noBackend', 'revNat', 'revNatUpdateFailed', 'udpSticky'] as const;
export type SockLbStat = (typeof SOCK_LB_STATS)[number];
/** `LB_AFFINITY_NETNS`: the family of `lb_affinity` keys the socket programs write (client = netns cookie). */
export const LB_AFFINITY_NETNS = 0;

/** The program of `hook` in sock.bpf.c. */
export function sockLbProgramName(hook: SockAddrHook): string {
  return `lb_${hook}`;
}

/** Directory of the pinned links. */
export function sockLbLinkDir(pinDir: string): string {
  return join(pinDir, 'sock_lb');
}

// --- codecs of bpf/lib/lb_sock.h (checked against BTF by sock.test.ts) ---

export interface LbSockRevnatKey {
  /** Socket cookie. */
  cookie: bigint;
  /** Backend address (network order; IPv4 in the first 4 bytes). */
  addr: Uint8Array;
  /** Backend port (host order here; network order in the map). */
  port: number;
  family: number;
}


export const lbSockRevnatKey: StructCodec<LbSockRevnatKey> = struct<LbSockRevnatKey>('lb_sock_revnat_key', 32, {
  cookie: { offset: 0, codec: u64 },
  addr: { offset: 8, codec: bytes(16) },
  port: { offset: 24, codec: be16 },
  family: { offset: 26, codec: u8 },
});

export interface LbSockRevnat {
  /** Service address (network order; IPv4 in the first 4 bytes). */
  addr: Uint8Array;
  /** Service port (host order). */
  port: number;
  family: number;
  serviceId: number;
}

export const lbSockRevnat: StructCodec<LbSockRevnat> = struct<LbSockRevnat>('lb_sock_revnat', 24, {
  addr: { offset: 0, codec: bytes(16) },
  port: { offset: 16, codec: be16 },
  family: { offset: 18, codec: u8 },
  serviceId: { offset: 20, codec: u32 },
});

export interface LbSockUdpKey {
  cookie: bigint;
  /** Service address. */
  addr: Uint8Array;
  /** Service port (host order). */
  port: number;
  family: number;
}

export const lbSockUdpKey: StructCodec<LbSockUdpKey> = struct<LbSockUdpKey>('lb_sock_udp_key', 32, {
  cookie: { offset: 0, codec: u64 },
  addr: { offset: 8, codec: bytes(16) },
  port: { offset: 24, codec: be16 },
  family: { offset: 26, codec: u8 },
});

export interface LbSockUdp {
  serviceId: number;
  backendId: number;
}

export const lbSockUdp: StructCodec<LbSockUdp> = struct<LbSockUdp>('lb_sock_udp', 8, {
  serviceId: { offset: 0, codec: u32 },
  backendId: { offset: 4, codec: u32 },
});

/** Text of an address as the lb maps hold it (AF_INET: the first 4 bytes). */
export function lbAddressText(family: number, addr: Uint8Array): string {
  if (family === 2) return Array.from(addr.subarray(0, 4)).join('.');
  if (family === 10) return formatIPv6(addr);
  return `family ${family}`;
}

// --- cgroups ---

const CGROUP2_SUPER_MAGIC = 0x63677270;

/** Decodes the octal escapes (`\040` …) of /proc/self/mounts. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount point of the cgroup v2 hierarchy (from /proc/self/mounts): the default cgroup root. */
export function cgroup2Root(): string {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields[2] === 'cgroup2' && fields[1] !== undefined) return unescapeMountField(fields[1]);
  }
  throw new BpfUsageError('no cgroup2 filesystem is mounted (see /proc/self/mounts): socket load balancing needs cgroup v2');
}

/** The id (inode number) of cgroup v2 directory `path`; throws when it is not one. */
export function cgroupId(path: string): bigint {
  let type: number;
  try {
    type = Number(statfsSync(path).type);
  } catch (err) {
    throw new BpfUsageError(`cgroup ${path}: ${(err as Error).message}`);
  }
  if (type !== CGROUP2_SUPER_MAGIC) throw new BpfUsageError(`${path} is not a cgroup v2 directory (cgroup2 is mounted at ${cgroup2Root()})`);
  return statSync(path, { bigint: true }).ino;
}

// --- programs and links ---

/** Descriptor of program `id` (`BPF_PROG_GET_FD_BY_ID`); the caller closes it. */
function programFdById(id: number): number {
  const attr = Buffer.alloc(12);
  attr.writeUInt32LE(id, 0);
  return check(bpf(Cmd.ProgGetFdById, attr), () => `open program ${id}`);
}

/** Same instructions (the tag ignores map descriptors) and the same maps? */
function sameProgram(programId: number, prog: Program): boolean {
  const fd = programFdById(programId);
  try {
    const tag = objectInfo(fd, 232, 'program').subarray(8, 16);
    const mine = objectInfo(prog.fd, 232, 'program').subarray(8, 16);
    if (!tag.equals(mine)) return false;
    const a = programMapIds(fd);
    const b = programMapIds(prog.fd);
    return a.length === b.length && a.every((id, i) => id === b[i]);
  } finally {
    closeFd(fd);
  }
}

/** `BPF_LINK_UPDATE`: the link runs `prog` from now on, without a moment with nothing attached. */
function linkUpdate(link: Link, prog: Program): void {
  const attr = Buffer.alloc(16);
  attr.writeUInt32LE(link.fd, 0);
  attr.writeUInt32LE(prog.fd, 4);
  check(bpf(Cmd.LinkUpdate, attr), () => `swap the program of ${link.description} for ${prog.name}`);
}

/** What {@link attachSocketLb} did at one hook. */
export type SockLbLinkAction = 'created' | 'adopted' | 'updated';

/** One hook's link after {@link attachSocketLb}. */
export interface SockLbLink {
  hook: SockAddrHook;
  /** Where the link is pinned. */
  pinPath: string;
  linkId: number;
  programId: number;
  /** `created`: a new link; `adopted`: a pinned link already ran this program; `updated`: its program was swapped. */
  action: SockLbLinkAction;
}

/** Options of {@link attachSocketLb}. */
export interface SocketLbOptions {
  /** The agent's bpffs directory: service maps shared by name, links under `sock_lb/`. */
  pinDir: string;
  /** cgroup v2 directory whose sockets (and its descendants') are balanced; default: the cgroup2 mount. */
  cgroupPath?: string;
  /** Object file (default dist/bpf/sock.bpf.o). */
  objectPath?: string;
  /** Sizes of the socket-only LRU maps (must match existing pins). */
  maxEntries?: { lb_sock_revnat?: number; lb_sock_udp?: number };
}

/** The attached socket load balancer (a description: the pinned links hold the attachment). */
export interface SocketLbHandle {
  readonly pinDir: string;
  readonly cgroupPath: string;
  readonly cgroupId: bigint;
  readonly links: readonly SockLbLink[];
  /** Detaches and unpins the links ({@link detachSocketLb}); returns how many were attached. */
  detach(): number;
}

function removeLinkPin(link: Link, path: string): void {
  try {
    if ((link.info().cgroupId ?? 0n) !== 0n) link.detach();
  } finally {
    if (!link.isClosed) link.close();
    if (existsSync(path)) unlinkSync(path);
  }
}

/**
 * Loads bpf/sock.bpf.o against the maps pinned under `pinDir` (creating and
 * pinning the ones that are missing), and attaches its eight programs to
 * `cgroupPath` through links pinned under `pinDir/sock_lb/`. Safe to repeat,
 * and what a restarted agent calls: links pinned for the same cgroup are
 * kept (or have their program swapped in place); links pinned for another
 * cgroup, or defunct ones, are replaced.
 *
 * On failure the links this call created are removed; links it adopted or
 * updated stay (they run a valid program either way).
 */
export function attachSocketLb(options: SocketLbOptions): SocketLbHandle {
  const { pinDir } = options;
  const cgroupPath = options.cgroupPath ?? cgroup2Root();
  const id = cgroupId(cgroupPath);
  const sizes = Object.fromEntries(Object.entries(options.maxEntries ?? {}).filter(([, v]) => v !== undefined)) as Record<string, number>;
  const coll = Collection.load(options.objectPath ?? bpfObjectPath(SOCK_LB_OBJECT), {
    pinMaps: [...LB_SHARED_MAPS, ...SOCK_LB_MAPS],
    pinDir,
    ...(Object.keys(sizes).length > 0 ? { maxEntries: sizes } : {}),
  });
  const dir = sockLbLinkDir(pinDir);
  const created: { link: Link; path: string }[] = [];
  const out: SockLbLink[] = [];
  try {
    mkdirSync(dir, { recursive: true });
    for (const hook of SOCK_LB_HOOKS) {
      const prog = coll.program(sockLbProgramName(hook));
      const attachType = sockAddrAttachType(hook);
      const path = join(dir, hook);
      if (existsSync(path)) {
        const old = Link.openPinned(path);
        try {
          const info = old.info();
          if (info.type === LinkType.Cgroup && info.cgroupId === id && info.attachType === attachType) {
            let action: SockLbLinkAction = 'adopted';
            if (!sameProgram(info.programId, prog)) {
              linkUpdate(old, prog);
              action = 'updated';
            }
            out.push({ hook, pinPath: path, linkId: old.id, programId: old.info().programId, action });
            continue;
          }
        } finally {
          old.close();
        }
        // Defunct (its cgroup is gone, or it was detached) or on another cgroup: replace it.
        removeLinkPin(Link.openPinned(path), path);
      }
      const link = attachCgroup(prog, cgroupPath, attachType);
      created.push({ link, path });
      link.pin(path);
      out.push({ hook, pinPath: path, linkId: link.id, programId: link.programId, action: 'created' });
    }
  } catch (err) {
    for (const { link, path } of created) {
      try {
        if (!link.isClosed) link.detach();
        if (existsSync(path)) unlinkSync(path);
      } catch { /* the original error is the one to report */ }
    }
    throw err;
  } finally {
    for (const { link } of created) if (!link.isClosed) link.close();
    coll.close();
  }
  return {
    pinDir,
    cgroupPath,
    cgroupId: id,
    links: out,
    detach: () => detachSocketLb(pinDir),
  };
}

/** State of one hook's pinned link. */
export interface SockLbLinkState {
  hook: SockAddrHook;
  pinned: boolean;
  linkId?: number;
  programId?: number;
  /** The cgroup it is attached to (0n: defunct). */
  cgroupId?: bigint;
}

/** What is pinned under `pinDir/sock_lb/`, hook by hook. */
export function socketLbLinks(pinDir: string): SockLbLinkState[] {
  const dir = sockLbLinkDir(pinDir);
  return SOCK_LB_HOOKS.map((hook) => {
    const path = join(dir, hook);
    if (!existsSync(path)) return { hook, pinned: false };
    const link = Link.openPinned(path);
    try {
      const info = link.info();
      return { hook, pinned: true, linkId: info.id, programId: info.programId, cgroupId: info.cgroupId ?? 0n };
    } finally {
      link.close();
    }
  });
}

/**
 * Are all eight hooks attached through their pinned links (to `cgroupPath`
 * when given, else to any cgroup)?
 */
export function socketLbAttached(pinDir: string, cgroupPath?: string): boolean {
  const want = cgroupPath === undefined ? undefined : cgroupId(cgroupPath);
  const dir = sockLbLinkDir(pinDir);
  return SOCK_LB_HOOKS.every((hook) => {
    const path = join(dir, hook);
    if (!existsSync(path)) return false;
    const link = Link.openPinned(path);
    try {
      const info = link.info();
      const at = info.cgroupId ?? 0n;
      return info.type === LinkType.Cgroup && at !== 0n && (want === undefined || at === want) && info.attachType === sockAddrAttachType(hook);
    } finally {
      link.close();
    }
  });
}

/**
 * Detaches the pinned links under `pinDir/sock_lb/` and removes their pins
 * (and the directory). With `removeMaps`, also unpins the socket-only maps
 * (never the service maps, which the endpoint programs share). Returns how
 * many links were attached. Safe to repeat.
 */
export function detachSocketLb(pinDir: string, options: { removeMaps?: boolean } = {}): number {
  const dir = sockLbLinkDir(pinDir);
  let n = 0;
  const errors: unknown[] = [];
  if (existsSync(dir)) {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      try {
        const link = Link.openPinned(path);
        if ((link.info().cgroupId ?? 0n) !== 0n) n++;
        removeLinkPin(link, path);
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 0) rmdirSync(dir);
  }
  if (options.removeMaps) {
    for (const name of SOCK_LB_MAPS) {
      const path = join(pinDir, name);
      if (existsSync(path)) unlinkSync(path);
    }
  }
  if (errors.length > 0) {
    const first = errors[0];
    throw first instanceof Error ? first : new BpfSyscallError(`detach socket load balancing under ${dir}`, 0);
  }
  return n;
}

// --- maps ---

/** The pinned `lb_sock_revnat` map (close it when done). */
export function sockRevNatMap(pinDir: string): BpfMap<LbSockRevnatKey, LbSockRevnat> {
  return BpfMap.openPinned(join(pinDir, 'lb_sock_revnat'), lbSockRevnatKey, lbSockRevnat);
}

/** The pinned `lb_sock_udp` map (close it when done). */
export function sockUdpMap(pinDir: string): BpfMap<LbSockUdpKey, LbSockUdp> {
  return BpfMap.openPinned(join(pinDir, 'lb_sock_udp'), lbSockUdpKey, lbSockUdp);
}

/** The counters of `lb_sock_stats`, summed over CPUs (zeros when the map is not pinned). */
export function socketLbStats(pinDir: string): Record<SockLbStat, number> {
  const out = Object.fromEntries(SOCK_LB_STATS.map((s) => [s, 0])) as Record<SockLbStat, number>;
  const path = join(pinDir, 'lb_sock_stats');
  if (!existsSync(path)) return out;
  const map = PerCpuMap.openPinned(path, u32, u64);
  try {
    SOCK_LB_STATS.forEach((name, i) => { out[name] = Number(map.lookupSum(i) ?? 0n); });
  } finally {
    map.close();
  }
  return out;
}
