/** Codecs of `struct ct_key` and `struct ct_entry` (bpf/include/conntrack.h): the `ct` map. */
import { bytes, struct, u16, u32, u64n, u8, type StructCodec } from '../../bpf/codec.js';

/** Entries of the `ct` map (`CT_MAX`). */
export const CT_MAX = 131072;
/** `CT_F_*`: ct_entry.flags. `SERVICE`: opened through per-packet service translation (replies translated back). */
export const CT_FLAGS = { SEEN_REPLY: 0x01, TX_FIN: 0x02, RX_FIN: 0x04, RST: 0x08, SERVICE: 0x10 } as const;

export interface CtKey {
  saddr: Uint8Array;
  daddr: Uint8Array;
  sport: number;
  dport: number;
  proto: number;
  family: number;
}

export const ctKey: StructCodec<CtKey> = struct<CtKey>('ct_key', 40, {
  saddr: { offset: 0, codec: bytes(16) },
  daddr: { offset: 16, codec: bytes(16) },
  sport: { offset: 32, codec: u16 },
  dport: { offset: 34, codec: u16 },
  proto: { offset: 36, codec: u8 },
  family: { offset: 37, codec: u8 },
});

export interface CtEntry {
  expiresNs: number;
  lastReportFwd: number;
  lastReportRev: number;
  packetsFwd: number;
  bytesFwd: number;
  packetsRev: number;
  bytesRev: number;
  createdNs: number;
  policyRevision: number;
  srcIdentity: number;
  dstIdentity: number;
  egressCookie: number;
  ingressCookie: number;
  flags: number;
  tcpFlagsFwd: number;
  tcpFlagsRev: number;
}

export const ctEntry: StructCodec<CtEntry> = struct<CtEntry>('ct_entry', 88, {
  expiresNs: { offset: 0, codec: u64n },
  lastReportFwd: { offset: 8, codec: u64n },
  lastReportRev: { offset: 16, codec: u64n },
  packetsFwd: { offset: 24, codec: u64n },
  bytesFwd: { offset: 32, codec: u64n },
  packetsRev: { offset: 40, codec: u64n },
  bytesRev: { offset: 48, codec: u64n },
  createdNs: { offset: 56, codec: u64n },
  policyRevision: { offset: 64, codec: u32 },
  srcIdentity: { offset: 68, codec: u32 },
  dstIdentity: { offset: 72, codec: u32 },
  egressCookie: { offset: 76, codec: u32 },
  ingressCookie: { offset: 80, codec: u32 },
  flags: { offset: 84, codec: u16 },
  tcpFlagsFwd: { offset: 86, codec: u8 },
  tcpFlagsRev: { offset: 87, codec: u8 },
});
