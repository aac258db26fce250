/**
 * Codecs of `struct lb_nat_key` and `struct lb_nat_entry` (bpf/include/lb_nat.h):
 * the endpoint programs' per-packet service translation state, `lb_nat`
 * (original tuple client → service frontend ⇒ the backend) and `lb_rev_nat`
 * (reply tuple backend → client ⇒ the service frontend). The datapath writes
 * both; the agent lists them and removes a deleted service's entries.
 * Ports are host order here, network order in the maps.
 */
import { be16, bytes, struct, u32, u8, type StructCodec } from '../../bpf/codec.js';

/** `LB_NAT_F_HAIRPIN`: the client is its own backend (source rewritten to the service address too). */
export const LB_NAT_F_HAIRPIN = 0x01;

export interface LbNatKey {
  /** 16 bytes, network order; IPv4 in the first 4, the rest zero. */
  saddr: Uint8Array;
  daddr: Uint8Array;
  sport: number;
  dport: number;
  proto: number;
  /** AF_INET (2) / AF_INET6 (10). */
  family: number;
}

export const lbNatKey: StructCodec<LbNatKey> = struct<LbNatKey>('lb_nat_key', 40, {
  saddr: { offset: 0, codec: bytes(16) },
  daddr: { offset: 16, codec: bytes(16) },
  sport: { offset: 32, codec: be16 },
  dport: { offset: 34, codec: be16 },
  proto: { offset: 36, codec: u8 },
  family: { offset: 37, codec: u8 },
});

export interface LbNatEntry {
  /** `lb_nat`: the backend's address when chosen; `lb_rev_nat`: the service address. 16 bytes, IPv4 in the first 4. */
  addr: Uint8Array;
  /** `lb_nat`: the backend's port; `lb_rev_nat`: the service port. */
  port: number;
  /** `LB_NAT_F_*`. */
  flags: number;
  backendId: number;
  serviceId: number;
  /** A NodePort connection from outside: the host device it came in on (replies leave there); 0 otherwise. */
  ifindex: number;
}

/** Offset of `service_id` in `struct lb_nat_entry` (read straight from raw batches). */
export const LB_NAT_ENTRY_SERVICE_ID_OFFSET = 24;

export const lbNatEntry: StructCodec<LbNatEntry> = struct<LbNatEntry>('lb_nat_entry', 32, {
  addr: { offset: 0, codec: bytes(16) },
  port: { offset: 16, codec: be16 },
  flags: { offset: 18, codec: u8 },
  backendId: { offset: 20, codec: u32 },
  serviceId: { offset: LB_NAT_ENTRY_SERVICE_ID_OFFSET, codec: u32 },
  ifindex: { offset: 28, codec: u32 },
});
