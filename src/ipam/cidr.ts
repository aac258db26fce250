/** IP addresses and CIDR prefixes as bigints: parsing, formatting, membership. */
import { formatIPv6, parseIPv4, parseIPv6 } from '../bpf/codec.js';

export type Family = 4 | 6;

/** A parsed CIDR prefix. */
export interface Cidr {
  family: Family;
  /** The network address (host bits zero). */
  base: bigint;
  prefix: number;
  /** Canonical text, e.g. `10.200.0.0/16`. */
  text: string;
}

/** Which family an address is in, or undefined when it is neither. */
export function addressFamily(text: string): Family | undefined {
  try { parseIPv4(text); return 4; } catch { /* not IPv4 */ }
  try { parseIPv6(text); return 6; } catch { /* not IPv6 */ }
  return undefined;
}

/** Parses an IPv4 or IPv6 address into a bigint; throws naming the text. */
export function parseAddress(text: string): { family: Family; value: bigint } {
  const family = addressFamily(text);
  if (family === undefined) throw new Error(`not an IP address: ${JSON.stringify(text)}`);
  const bytes = family === 4 ? parseIPv4(text) : parseIPv6(text);
  let value = 0n;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  return { family, value };
}

/** Formats a bigint address of `family` as canonical text. */
export function formatAddress(family: Family, value: bigint): string {
  const len = family === 4 ? 4 : 16;
  const bytes = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--) { bytes[i] = Number(value & 0xffn); value >>= 8n; }
  return family === 4 ? bytes.join('.') : formatIPv6(bytes);
}

/** Parses `addr/prefix`; the host bits must be zero. Throws a message naming the text. */
export function parseCidr(text: string): Cidr {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) throw new Error(`not a CIDR (address/prefix): ${JSON.stringify(text)}`);
  const { family, value } = parseAddress(m[1] as string);
  const prefix = Number(m[2]);
  const bits = family === 4 ? 32 : 128;
  if (prefix > bits) throw new Error(`prefix /${prefix} is too long for IPv${family} in ${JSON.stringify(text)}`);
  const hostBits = BigInt(bits - prefix);
  const base = (value >> hostBits) << hostBits;
  if (base !== value) throw new Error(`${text} has host bits set (did you mean ${formatAddress(family, base)}/${prefix}?)`);
  return { family, base, prefix, text: `${formatAddress(family, base)}/${prefix}` };
}

/** Number of addresses in a prefix. */
export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt((c.family === 4 ? 32 : 128) - c.prefix);
}

/** Does `c` contain the address `value` of `family`? */
export function cidrContains(c: Cidr, family: Family, value: bigint): boolean {
  return family === c.family && value >= c.base && value < c.base + cidrSize(c);
}
