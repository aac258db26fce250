/** Codecs of `struct ipcache_key` / `struct ipcache_value` (bpf/include/ipcache.h): the `ipcache` LPM trie, prefix → identity. */
import { bytes, formatIPv6, struct, u32, u8, type Codec, type StructCodec } from '../../bpf/codec.js';
import { parseCidr } from '../../netlink/message.js';

/** Entries of the `ipcache` map (`IPCACHE_MAX`). */
export const IPCACHE_MAX = 65536;
/** `IPCACHE_PREFIX_FIXED`: prefix bits before the address. */
export const IPCACHE_PREFIX_FIXED = 32;

export interface IpcacheKey {
  /** LPM prefix length, counting the fixed part: IPCACHE_PREFIX_FIXED + address bits. */
  prefixlen: number;
  family: number;
  addr: Uint8Array;
}

export const ipcacheKey: StructCodec<IpcacheKey> = struct<IpcacheKey>('ipcache_key', 24, {
  prefixlen: { offset: 0, codec: u32 },
  family: { offset: 4, codec: u8 },
  addr: { offset: 8, codec: bytes(16) },
});

export interface IpcacheValue {
  identity: number;
  /** None defined yet; 0. */
  flags: number;
}

export const ipcacheValue: StructCodec<IpcacheValue> = struct<IpcacheValue>('ipcache_value', 8, {
  identity: { offset: 0, codec: u32 },
  flags: { offset: 4, codec: u32 },
});

/** A prefix (`addr/len`, or a bare address: a host prefix) as key bytes, host bits cleared: the trie compares only the prefix, and canonical keys keep the agent's diff exact. */
function prefixKeyBytes(text: string): { family: 4 | 6; addr: Uint8Array; bits: number } {
  const p = parseCidr(text);
  const addr = new Uint8Array(16);
  addr.set(p.bytes);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, p.prefixLen - i * 8));
    addr[i] = (addr[i] as number) & ((0xff << (8 - keep)) & 0xff);
  }
  return { family: p.family, addr, bits: p.prefixLen };
}

/** The canonical text of a prefix (host bits cleared). */
function formatCidr(family: 4 | 6, addr: Uint8Array, bits: number): string {
  return `${family === 4 ? Array.from(addr.subarray(0, 4)).join('.') : formatIPv6(addr)}/${bits}`;
}

/** `struct ipcache_key` as prefix text (`10.0.0.0/8`, `fd00::/64`): the key codec of the `ipcache` map. */
export const ipcachePrefix: Codec<string> = {
  size: ipcacheKey.size,
  encode(text, buf, offset) {
    const p = prefixKeyBytes(text);
    ipcacheKey.encode({ prefixlen: IPCACHE_PREFIX_FIXED + p.bits, family: p.family === 4 ? 2 : 10, addr: p.addr }, buf, offset);
  },
  decode(buf, offset) {
    const k = ipcacheKey.decode(buf, offset);
    return formatCidr(k.family === 2 ? 4 : 6, k.addr, k.prefixlen - IPCACHE_PREFIX_FIXED);
  },
};
