/**
 * Codecs of the service load-balancing structs (bpf/include/lb.h):
 * `lb_services` (frontend + slot → service or backend), `lb_backends`
 * (backend ID → address), `lb_affinity` (client + service → backend), and the
 * Maglev inner tables' shape (bpf/lib/lb_select.h).
 */
import { isIPv6 } from 'node:net';
import { BpfUsageError } from '../../bpf/errors.js';
import { be16, bytes, formatIPv6, parseIPv6, struct, u16, u32, u64n, u8, type StructCodec } from '../../bpf/codec.js';

/** `LB_SERVICES_MAX`: slot entries, services × (backends + 1). */
export const LB_SERVICES_MAX = 262144;
/** `LB_BACKENDS_MAX`. */
export const LB_BACKENDS_MAX = 131072;
/** `LB_MAGLEV_MAX`: Maglev services (entries of the outer `lb_maglev` map). */
export const LB_MAGLEV_MAX = 8192;
/** `LB_MAGLEV_TABLE_MAX`: the largest table size (a prime). */
export const LB_MAGLEV_TABLE_MAX = 131071;
/** `LB_AFFINITY_MAX`. */
export const LB_AFFINITY_MAX = 65536;
/** `LB_NAT_MAX`. */
export const LB_NAT_MAX = 131072;

/** `LB_F_*`: lb_service.flags (slot 0). */
export const LB_FLAGS = { MAGLEV: 0x01, AFFINITY: 0x02, NODEPORT: 0x04, LOCAL: 0x08 } as const;
/** `LB_BACKEND_F_TERMINATING`: lb_backend.flags. */
export const LB_BACKEND_F_TERMINATING = 0x01;

/** `BPF_F_INNER_MAP | BPF_F_MMAPABLE`: the flags of `struct lb_maglev_inner` (lb_select.h); every table must carry exactly these. */
export const LB_MAGLEV_INNER_FLAGS = 0x1000 | 0x400;

/** AF_INET / AF_INET6 as the maps store them. */
export const LB_AF_INET = 2;
export const LB_AF_INET6 = 10;

/** IPPROTO_TCP / IPPROTO_UDP. */
export const LB_PROTO = { TCP: 6, UDP: 17 } as const;
export type LbProto = keyof typeof LB_PROTO;

export interface LbServiceKey {
  /** 16 bytes, network order; IPv4 in the first 4, the rest zero. */
  addr: Uint8Array;
  /** Host order here; network order in the map. */
  port: number;
  proto: number;
  /** LB_AF_INET / LB_AF_INET6. */
  family: number;
  /** 0: the service; 1..count: its backends. */
  slot: number;
}

export const lbServiceKey: StructCodec<LbServiceKey> = struct<LbServiceKey>('lb_service_key', 24, {
  addr: { offset: 0, codec: bytes(16) },
  port: { offset: 16, codec: be16 },
  proto: { offset: 18, codec: u8 },
  family: { offset: 19, codec: u8 },
  slot: { offset: 20, codec: u16 },
});

/** Offset of `slot` in `struct lb_service_key` (the writer stamps slots into pre-encoded keys). */
export const LB_SERVICE_KEY_SLOT_OFFSET = 20;

export interface LbService {
  /** slot > 0: the backend (lb_backends key). */
  backendId: number;
  /** slot 0: the service's number (lb_maglev, lb_affinity, rev-NAT). */
  serviceId: number;
  /** slot 0: backends with a slot. */
  count: number;
  /** slot 0: LB_F_*. */
  flags: number;
  /** slot 0: seconds. */
  affinityTimeout: number;
  /** slot 0: entries of its Maglev table. */
  maglevSize: number;
}

export const lbService: StructCodec<LbService> = struct<LbService>('lb_service', 20, {
  backendId: { offset: 0, codec: u32 },
  serviceId: { offset: 4, codec: u32 },
  count: { offset: 8, codec: u16 },
  flags: { offset: 10, codec: u8 },
  affinityTimeout: { offset: 12, codec: u32 },
  maglevSize: { offset: 16, codec: u32 },
});

export interface LbBackend {
  /** 16 bytes, network order; IPv4 in the first 4. */
  addr: Uint8Array;
  /** Host order here; network order in the map. */
  port: number;
  proto: number;
  family: number;
  /** LB_BACKEND_F_*. */
  flags: number;
}

export const lbBackend: StructCodec<LbBackend> = struct<LbBackend>('lb_backend', 24, {
  addr: { offset: 0, codec: bytes(16) },
  port: { offset: 16, codec: be16 },
  proto: { offset: 18, codec: u8 },
  family: { offset: 19, codec: u8 },
  flags: { offset: 20, codec: u8 },
});

export interface LbAffinityKey {
  client: Uint8Array;
  serviceId: number;
  family: number;
}

export const lbAffinityKey: StructCodec<LbAffinityKey> = struct<LbAffinityKey>('lb_affinity_key', 24, {
  client: { offset: 0, codec: bytes(16) },
  serviceId: { offset: 16, codec: u32 },
  family: { offset: 20, codec: u8 },
});

export interface LbAffinity {
  /** bpf_ktime_get_ns() of the last use. */
  lastUsedNs: number;
  backendId: number;
}

export const lbAffinity: StructCodec<LbAffinity> = struct<LbAffinity>('lb_affinity', 16, {
  lastUsedNs: { offset: 0, codec: u64n },
  backendId: { offset: 8, codec: u32 },
});

/** The map's family number of 4 / 6. */
export function lbFamily(family: 4 | 6): number {
  return family === 4 ? LB_AF_INET : LB_AF_INET6;
}

/** 4 / 6 of a map family number (throws on others). */
export function lbFamilyOf(family: number): 4 | 6 {
  if (family === LB_AF_INET) return 4;
  if (family === LB_AF_INET6) return 6;
  throw new BpfUsageError(`unknown address family ${family} in a load-balancing map`);
}

/** Dotted-quad IPv4 (no leading zeros, as node:net's isIPv4) into `out`; false when `ip` is not one. A hot path: no regex, no split. */
function parseIPv4Into(ip: string, out: Uint8Array): boolean {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46; // a '.' after the end closes the last part
    if (c === 46) {
      if (digits === 0 || part > 3) return false;
      out[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) return false; // leading zero
      value = value * 10 + (c - 48);
      if (++digits > 3 || value > 255) return false;
    } else return false;
  }
  return part === 4;
}

/** 16 address bytes (IPv4 in the first 4) of `ip`, which must be of `family`. */
export function lbAddrBytes(family: 4 | 6, ip: string): Uint8Array {
  const out = new Uint8Array(16);
  if (family === 4 && typeof ip === 'string' && parseIPv4Into(ip, out)) return out;
  if (family === 6 && isIPv6(ip)) out.set(parseIPv6(ip));
  else throw new BpfUsageError(`not an IPv${family} address: ${JSON.stringify(ip)}`);
  return out;
}

/** Canonical text of 16 address bytes of map family `family`. */
export function lbAddrText(family: number, addr: Uint8Array): string {
  if (family === LB_AF_INET) return `${addr[0]}.${addr[1]}.${addr[2]}.${addr[3]}`;
  if (family === LB_AF_INET6) return formatIPv6(addr);
  throw new BpfUsageError(`unknown address family ${family} in a load-balancing map`);
}

/** `TCP` / `UDP` / the number for other protocols. */
export function lbProtoName(proto: number): string {
  for (const [name, n] of Object.entries(LB_PROTO)) if (n === proto) return name;
  return String(proto);
}
