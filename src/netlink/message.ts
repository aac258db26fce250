/**
 * Pure encoding and decoding of rtnetlink messages: the netlink header, the
 * fixed headers of link/address/route/neighbour messages, and (nested) route
 * attributes. No FFI and no kernel here; see socket.ts for the transport.
 *
 * Layouts are those of linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
 * linux/if_addr.h and linux/neighbour.h, in host byte order (little-endian on
 * every architecture Waggle supports) except addresses, which are network order.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { BpfUsageError } from '../bpf/errors.js';
import { formatIPv6, parseIPv4, parseIPv6 } from '../bpf/codec.js';

// ---- constants ------------------------------------------------------------

/** Address families. */
export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** Netlink control message types. */
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

/** `nlmsg_flags` bits. */
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ECHO = 0x8;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
/** Set on an NLMSG_ERROR whose copy of the request was capped to its header. */
export const NLM_F_CAPPED = 0x100;
/** Set on an NLMSG_ERROR / NLMSG_DONE that carries extended-ack attributes. */
export const NLM_F_ACK_TLVS = 0x200;

/** rtnetlink message types. */
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;

/** Link attributes (`IFLA_*`) and link-info attributes. */
export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINK = 5;
export const IFLA_MASTER = 10;
export const IFLA_OPERSTATE = 16;
export const IFLA_LINKINFO = 18;
export const IFLA_NET_NS_FD = 28;
export const IFLA_EXT_MASK = 29;
export const IFLA_LINK_NETNSID = 37;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const VETH_INFO_PEER = 1;
/** `IFLA_EXT_MASK` bit: leave the (large) statistics out of link replies. */
export const RTEXT_FILTER_SKIP_STATS = 1 << 3;
/** `ifi_flags` bits. */
export const IFF_UP = 0x1;
export const IFF_LOWER_UP = 0x10000;

/** Address attributes (`IFA_*`) and flags. */
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;
export const IFA_LABEL = 3;
export const IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02;
export const IFA_F_PERMANENT = 0x80;

/** Route attributes (`RTA_*`), types, protocols, scopes and flags. */
export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PRIORITY = 6;
export const RTA_PREFSRC = 7;
export const RTA_TABLE = 15;
export const RTN_UNICAST = 1;
export const RTPROT_BOOT = 3;
export const RT_TABLE_MAIN = 254;
export const RTNH_F_ONLINK = 0x4;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_SITE = 200;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_HOST = 254;
export const RT_SCOPE_NOWHERE = 255;

/** Neighbour attributes (`NDA_*`) and states (`NUD_*`). */
export const NDA_DST = 1;
export const NDA_LLADDR = 2;
export const NUD_INCOMPLETE = 0x01;
export const NUD_REACHABLE = 0x02;
export const NUD_STALE = 0x04;
export const NUD_DELAY = 0x08;
export const NUD_PROBE = 0x10;
export const NUD_FAILED = 0x20;
export const NUD_NOARP = 0x40;
export const NUD_PERMANENT = 0x80;

/** Attribute type bits that are flags, not part of the type. */
export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = 0x3fff;

/** Sizes of the fixed headers. */
export const NLMSG_HDRLEN = 16;
export const IFINFOMSG_LEN = 16;
export const IFADDRMSG_LEN = 8;
export const RTMSG_LEN = 12;
export const NDMSG_LEN = 12;
const RTA_HDRLEN = 4;

/** Rounds `n` up to the 4-byte netlink alignment. */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

// ---- netlink messages -----------------------------------------------------

/** The fields of a `struct nlmsghdr` other than its length. */
export interface NlmsgHeader {
  type: number;
  flags: number;
  seq: number;
  /** Port id of the sender (0: the kernel) or, in replies, of the requester. */
  pid: number;
}

/** One decoded netlink message: its header and its body (the bytes after the header). */
export interface NetlinkMessage extends NlmsgHeader {
  body: Buffer;
}

/** Encodes a netlink message: a 16-byte header followed by `body`, padded to 4 bytes. */
export function encodeMessage(header: NlmsgHeader, body: Buffer): Buffer {
  const len = NLMSG_HDRLEN + body.length;
  const out = Buffer.alloc(align4(len));
  out.writeUInt32LE(len, 0);
  out.writeUInt16LE(header.type, 4);
  out.writeUInt16LE(header.flags, 6);
  out.writeUInt32LE(header.seq >>> 0, 8);
  out.writeUInt32LE(header.pid >>> 0, 12);
  body.copy(out, NLMSG_HDRLEN);
  return out;
}

/**
 * Splits a datagram into its netlink messages. The bodies are views into `buf`.
 * Throws a usage error on a truncated or malformed message.
 */
export function parseMessages(buf: Buffer): NetlinkMessage[] {
  const out: NetlinkMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) {
      throw new BpfUsageError(`malformed netlink message at offset ${off}: length ${len}, ${buf.length - off} bytes left`);
    }
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      body: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** A decoded `struct nlmsgerr` (the body of NLMSG_ERROR), with its extended ack. */
export interface NetlinkErrorBody {
  /** Positive errno, 0 for an acknowledgement. */
  errno: number;
  /** The kernel's explanation (`NLMSGERR_ATTR_MSG`), when it gave one. */
  message?: string;
  /** Offset in the request of the attribute the kernel blamed (`NLMSGERR_ATTR_OFFS`). */
  badAttrOffset?: number;
}

const NLMSGERR_ATTR_MSG = 1;
const NLMSGERR_ATTR_OFFS = 2;

/**
 * Decodes the body of an NLMSG_ERROR message (or of an NLMSG_DONE, whose body
 * starts with the same `int error`). `flags` are the message's header flags.
 */
export function decodeErrorBody(body: Buffer, flags: number, isDone = false): NetlinkErrorBody {
  if (body.length < 4) return { errno: 0 };
  const result: NetlinkErrorBody = { errno: Math.abs(body.readInt32LE(0)) };
  if ((flags & NLM_F_ACK_TLVS) === 0) return result;
  let tlvOffset = 4;
  if (!isDone) {
    if (body.length < 4 + NLMSG_HDRLEN) return result;
    tlvOffset = (flags & NLM_F_CAPPED) !== 0 ? 4 + NLMSG_HDRLEN : 4 + align4(body.readUInt32LE(4));
  }
  if (tlvOffset > body.length) return result;
  const attrs = parseAttrs(body, tlvOffset);
  const msg = attrs.get(NLMSGERR_ATTR_MSG);
  if (msg !== undefined) result.message = decodeString(msg);
  const offs = attrs.get(NLMSGERR_ATTR_OFFS);
  if (offs !== undefined && offs.length >= 4) result.badAttrOffset = offs.readUInt32LE(0);
  return result;
}

// ---- attributes -----------------------------------------------------------

/** A route attribute to encode: raw bytes, or a list of nested attributes. */
export interface NlAttr {
  /** Attribute type, optionally with {@link NLA_F_NESTED} / {@link NLA_F_NET_BYTEORDER}. */
  type: number;
  value: Buffer | readonly NlAttr[];
}

/** Encodes attributes back to back, each header + payload padded to 4 bytes. */
export function encodeAttrs(attrs: readonly NlAttr[]): Buffer {
  const parts: Buffer[] = [];
  for (const a of attrs) {
    const payload = Buffer.isBuffer(a.value) ? a.value : encodeAttrs(a.value);
    const len = RTA_HDRLEN + payload.length;
    if (len > 0xffff) throw new BpfUsageError(`netlink attribute ${a.type & NLA_TYPE_MASK} is too long (${payload.length} bytes)`);
    const out = Buffer.alloc(align4(len));
    out.writeUInt16LE(len, 0);
    out.writeUInt16LE(a.type, 2);
    payload.copy(out, RTA_HDRLEN);
    parts.push(out);
  }
  return Buffer.concat(parts);
}

/** An attribute holding raw bytes. */
export function attrBytes(type: number, value: Buffer | Uint8Array): NlAttr {
  return { type, value: Buffer.from(value) };
}

/** An attribute holding a `u8`. */
export function attrU8(type: number, value: number): NlAttr {
  const b = Buffer.alloc(1);
  b.writeUInt8(value);
  return { type, value: b };
}

/** An attribute holding a `u16` in host order. */
export function attrU16(type: number, value: number): NlAttr {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value);
  return { type, value: b };
}

/** An attribute holding a `u32` in host order. */
export function attrU32(type: number, value: number): NlAttr {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return { type, value: b };
}

/** An attribute holding an `s32` in host order (e.g. a file descriptor). */
export function attrS32(type: number, value: number): NlAttr {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value);
  return { type, value: b };
}

/** An attribute holding a NUL-terminated string. */
export function attrString(type: number, value: string): NlAttr {
  return { type, value: Buffer.from(`${value}\0`, 'utf8') };
}

/**
 * A nested attribute. `flagNested` sets {@link NLA_F_NESTED}; off by default,
 * as iproute2 does, since the older rtnetlink parsers accept both.
 */
export function attrNested(type: number, children: readonly NlAttr[], flagNested = false): NlAttr {
  return { type: flagNested ? type | NLA_F_NESTED : type, value: children };
}

/** One decoded attribute. `value` is a view into the parsed buffer. */
export interface ParsedAttr {
  /** Type without the {@link NLA_F_NESTED} / {@link NLA_F_NET_BYTEORDER} bits. */
  type: number;
  value: Buffer;
}

/** Decodes the attributes in `buf` from `offset` on, in order (repeated types kept). */
export function parseAttrList(buf: Buffer, offset = 0): ParsedAttr[] {
  const out: ParsedAttr[] = [];
  let off = offset;
  while (off + RTA_HDRLEN <= buf.length) {
    const len = buf.readUInt16LE(off);
    if (len < RTA_HDRLEN || off + len > buf.length) {
      throw new BpfUsageError(`malformed netlink attribute at offset ${off}: length ${len}, ${buf.length - off} bytes left`);
    }
    out.push({ type: buf.readUInt16LE(off + 2) & NLA_TYPE_MASK, value: buf.subarray(off + RTA_HDRLEN, off + len) });
    off += align4(len);
  }
  return out;
}

/**
 * Decodes the attributes in `buf` from `offset` on into a map of type → value
 * (the first occurrence wins). Values are views into `buf`.
 */
export function parseAttrs(buf: Buffer, offset = 0): Map<number, Buffer> {
  const map = new Map<number, Buffer>();
  for (const a of parseAttrList(buf, offset)) {
    if (!map.has(a.type)) map.set(a.type, a.value);
  }
  return map;
}

/** A string attribute's text, up to its first NUL. */
export function decodeString(value: Buffer): string {
  const nul = value.indexOf(0);
  return value.toString('utf8', 0, nul === -1 ? value.length : nul);
}

/** A `u32` attribute's value (host order); undefined when absent or short. */
export function decodeU32(value: Buffer | undefined): number | undefined {
  return value !== undefined && value.length >= 4 ? value.readUInt32LE(0) : undefined;
}

/** A `s32` attribute's value (host order); undefined when absent or short. */
export function decodeS32(value: Buffer | undefined): number | undefined {
  return value !== undefined && value.length >= 4 ? value.readInt32LE(0) : undefined;
}

// ---- fixed headers --------------------------------------------------------

/** `struct ifinfomsg`: the header of link messages. */
export interface Ifinfomsg {
  family: number;
  /** Device type (`ARPHRD_*`). */
  type: number;
  index: number;
  flags: number;
  /** Which `flags` bits a request changes. */
  change: number;
}

/** Encodes a `struct ifinfomsg`; missing fields are 0. */
export function encodeIfinfomsg(m: Partial<Ifinfomsg> = {}): Buffer {
  const b = Buffer.alloc(IFINFOMSG_LEN);
  b.writeUInt8(m.family ?? AF_UNSPEC, 0);
  b.writeUInt16LE(m.type ?? 0, 2);
  b.writeInt32LE(m.index ?? 0, 4);
  b.writeUInt32LE((m.flags ?? 0) >>> 0, 8);
  b.writeUInt32LE((m.change ?? 0) >>> 0, 12);
  return b;
}

/** Decodes a `struct ifinfomsg` at the start of `b`. */
export function decodeIfinfomsg(b: Buffer): Ifinfomsg {
  checkLength(b, IFINFOMSG_LEN, 'ifinfomsg');
  return { family: b.readUInt8(0), type: b.readUInt16LE(2), index: b.readInt32LE(4), flags: b.readUInt32LE(8), change: b.readUInt32LE(12) };
}

/** `struct ifaddrmsg`: the header of address messages. */
export interface Ifaddrmsg {
  family: number;
  prefixLen: number;
  /** Low 8 bits of the address flags (the full set is in `IFA_FLAGS`). */
  flags: number;
  scope: number;
  index: number;
}

/** Encodes a `struct ifaddrmsg`; missing fields are 0. */
export function encodeIfaddrmsg(m: Partial<Ifaddrmsg> = {}): Buffer {
  const b = Buffer.alloc(IFADDRMSG_LEN);
  b.writeUInt8(m.family ?? AF_UNSPEC, 0);
  b.writeUInt8(m.prefixLen ?? 0, 1);
  b.writeUInt8((m.flags ?? 0) & 0xff, 2);
  b.writeUInt8(m.scope ?? 0, 3);
  b.writeUInt32LE((m.index ?? 0) >>> 0, 4);
  return b;
}

/** Decodes a `struct ifaddrmsg` at the start of `b`. */
export function decodeIfaddrmsg(b: Buffer): Ifaddrmsg {
  checkLength(b, IFADDRMSG_LEN, 'ifaddrmsg');
  return { family: b.readUInt8(0), prefixLen: b.readUInt8(1), flags: b.readUInt8(2), scope: b.readUInt8(3), index: b.readUInt32LE(4) };
}

/** `struct rtmsg`: the header of route messages. */
export interface Rtmsg {
  family: number;
  dstLen: number;
  srcLen: number;
  tos: number;
  /** Table id, or `RT_TABLE_UNSPEC` (0) with the id in `RTA_TABLE`. */
  table: number;
  protocol: number;
  scope: number;
  /** Route type (`RTN_*`). */
  type: number;
  flags: number;
}

/** Encodes a `struct rtmsg`; missing fields are 0. */
export function encodeRtmsg(m: Partial<Rtmsg> = {}): Buffer {
  const b = Buffer.alloc(RTMSG_LEN);
  b.writeUInt8(m.family ?? AF_UNSPEC, 0);
  b.writeUInt8(m.dstLen ?? 0, 1);
  b.writeUInt8(m.srcLen ?? 0, 2);
  b.writeUInt8(m.tos ?? 0, 3);
  b.writeUInt8(m.table ?? 0, 4);
  b.writeUInt8(m.protocol ?? 0, 5);
  b.writeUInt8(m.scope ?? 0, 6);
  b.writeUInt8(m.type ?? 0, 7);
  b.writeUInt32LE((m.flags ?? 0) >>> 0, 8);
  return b;
}

/** Decodes a `struct rtmsg` at the start of `b`. */
export function decodeRtmsg(b: Buffer): Rtmsg {
  checkLength(b, RTMSG_LEN, 'rtmsg');
  return {
    family: b.readUInt8(0), dstLen: b.readUInt8(1), srcLen: b.readUInt8(2), tos: b.readUInt8(3),
    table: b.readUInt8(4), protocol: b.readUInt8(5), scope: b.readUInt8(6), type: b.readUInt8(7), flags: b.readUInt32LE(8),
  };
}

/** `struct ndmsg`: the header of neighbour messages. */
export interface Ndmsg {
  family: number;
  ifindex: number;
  /** `NUD_*` state bits. */
  state: number;
  /** `NTF_*` flags. */
  flags: number;
  type: number;
}

/** Encodes a `struct ndmsg`; missing fields are 0. */
export function encodeNdmsg(m: Partial<Ndmsg> = {}): Buffer {
  const b = Buffer.alloc(NDMSG_LEN);
  b.writeUInt8(m.family ?? AF_UNSPEC, 0);
  b.writeInt32LE(m.ifindex ?? 0, 4);
  b.writeUInt16LE(m.state ?? 0, 8);
  b.writeUInt8(m.flags ?? 0, 10);
  b.writeUInt8(m.type ?? 0, 11);
  return b;
}

/** Decodes a `struct ndmsg` at the start of `b`. */
export function decodeNdmsg(b: Buffer): Ndmsg {
  checkLength(b, NDMSG_LEN, 'ndmsg');
  return { family: b.readUInt8(0), ifindex: b.readInt32LE(4), state: b.readUInt16LE(8), flags: b.readUInt8(10), type: b.readUInt8(11) };
}

function checkLength(b: Buffer, need: number, what: string): void {
  if (b.length < need) throw new BpfUsageError(`truncated ${what}: ${b.length} bytes, need ${need}`);
}

// ---- addresses ------------------------------------------------------------

/** IP version of an address: 4 or 6. */
export type IpFamily = 4 | 6;

/** An IP address in the kernel's form. */
export interface ParsedIp {
  family: IpFamily;
  /** 4 or 16 bytes, network order. */
  bytes: Buffer;
}

/** An address with a prefix length, e.g. `10.199.0.1/24`. */
export interface ParsedCidr extends ParsedIp {
  prefixLen: number;
}

/** `AF_INET` / `AF_INET6` for an IP version. */
export function afOf(family: IpFamily): number {
  return family === 4 ? AF_INET : AF_INET6;
}

/** IP version for `AF_INET` / `AF_INET6`; undefined for other families. */
export function familyOfAf(af: number): IpFamily | undefined {
  return af === AF_INET ? 4 : af === AF_INET6 ? 6 : undefined;
}

/** Parses an IPv4 or IPv6 address (no prefix). Throws a usage error otherwise. */
export function parseIp(text: string): ParsedIp {
  if (isIPv4(text)) return { family: 4, bytes: Buffer.from(parseIPv4(text)) };
  if (isIPv6(text)) return { family: 6, bytes: Buffer.from(parseIPv6(text)) };
  throw new BpfUsageError(`not an IP address: ${JSON.stringify(text)}`);
}

/**
 * Parses `ADDR/LEN` (IPv4 or IPv6). Without `/LEN` the prefix is the full
 * address length (a host address). Throws a usage error on bad input.
 */
export function parseCidr(text: string): ParsedCidr {
  const slash = text.indexOf('/');
  const ip = parseIp(slash === -1 ? text : text.slice(0, slash));
  const max = ip.family === 4 ? 32 : 128;
  if (slash === -1) return { ...ip, prefixLen: max };
  const lenText = text.slice(slash + 1);
  const prefixLen = Number(lenText);
  if (!/^\d{1,3}$/.test(lenText) || prefixLen > max) {
    throw new BpfUsageError(`bad prefix length in ${JSON.stringify(text)}: need 0-${max}`);
  }
  return { ...ip, prefixLen };
}

/** Formats 4 or 16 address bytes (network order) as text. */
export function formatIp(bytes: Buffer): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length === 16) return formatIPv6(bytes);
  throw new BpfUsageError(`not an IP address: ${bytes.length} bytes`);
}

/** Parses `aa:bb:cc:dd:ee:ff` (also `-` separated) into 6 bytes. */
export function parseMac(text: string): Buffer {
  const parts = text.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new BpfUsageError(`not a MAC address: ${JSON.stringify(text)}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

/** Formats a hardware address as lower-case colon-separated hex. */
export function formatMac(bytes: Buffer): string {
  return Array.from(bytes, (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** A named route/address scope. */
export type Scope = 'universe' | 'site' | 'link' | 'host' | 'nowhere';

const SCOPES: Record<Scope, number> = {
  universe: RT_SCOPE_UNIVERSE, site: RT_SCOPE_SITE, link: RT_SCOPE_LINK, host: RT_SCOPE_HOST, nowhere: RT_SCOPE_NOWHERE,
};

/** The `RT_SCOPE_*` number of a scope (numbers pass through, 0-255). */
export function scopeNumber(scope: Scope | number): number {
  if (typeof scope === 'number') {
    if (!Number.isInteger(scope) || scope < 0 || scope > 255) throw new BpfUsageError(`bad scope ${scope}: need 0-255`);
    return scope;
  }
  const n = SCOPES[scope];
  if (n === undefined) throw new BpfUsageError(`unknown scope ${JSON.stringify(scope)}`);
  return n;
}

/** The name of an `RT_SCOPE_*` number, or the number when it has none. */
export function scopeName(scope: number): Scope | number {
  const hit = (Object.keys(SCOPES) as Scope[]).find((k) => SCOPES[k] === scope);
  return hit ?? scope;
}

/** Longest interface name the kernel accepts (`IFNAMSIZ` - 1). */
export const MAX_IFNAME_LEN = 15;

/** Throws a usage error unless `name` is a valid interface name. */
export function checkIfname(name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > MAX_IFNAME_LEN || /[\s/:]/.test(name) || name === '.' || name === '..') {
    throw new BpfUsageError(`invalid interface name ${JSON.stringify(name)}: need 1-${MAX_IFNAME_LEN} bytes, no space, '/' or ':'`);
  }
}
