/**
 * Test-only helpers shared by the endpoint datapath tests (lxc.test.ts,
 * policy.test.ts, lb.test.ts): crafted Ethernet frames (ARP, IPv4, IPv6, TCP,
 * UDP, ICMP, neighbor solicitation), checksums (computing and verifying them,
 * a parser of rewritten frames), the `struct __sk_buff` context for
 * BPF_PROG_TEST_RUN, and draining the events ring.
 */
import { formatIPv6, parseIPv4, parseIPv6 } from '../bpf/codec.js';
import type { RingBuffer } from '../bpf/ringbuf.js';
import { decodeFlowEvent, type DecodedFlowEvent } from './lxc.js';

/** The tc verdicts the endpoint programs return. */
export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;

/** TCP flag bits. */
export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const ACK = 0x10;

export const macBuf = (m: string): Buffer => Buffer.from(m.split(':').map((x) => parseInt(x, 16)));
export const macText = (b: Buffer): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');

/** Ones' complement sum of `data` folded to 16 bits (not inverted). */
export function onesSum(data: Buffer, start = 0): number {
  let sum = start;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2 === 1) sum += (data[data.length - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export const checksum = (data: Buffer): number => ~onesSum(data) & 0xffff;

/** ICMPv6/UDP/TCP checksum over the IPv6 pseudo-header; 0 when `l4` (with its checksum in place) is valid. */
export function ipv6L4Checksum(src: Buffer, dst: Buffer, nexthdr: number, l4: Buffer): number {
  const ph = Buffer.alloc(40);
  src.copy(ph, 0);
  dst.copy(ph, 16);
  ph.writeUInt32BE(l4.length, 32);
  ph.writeUInt32BE(nexthdr, 36);
  return ~onesSum(l4, onesSum(ph)) & 0xffff;
}

export function eth(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  macBuf(dst).copy(h, 0);
  macBuf(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

export function arpRequest(senderMac: string, senderIp: string, targetIp: string): Buffer {
  const a = Buffer.alloc(28);
  a.writeUInt16BE(1, 0);
  a.writeUInt16BE(0x0800, 2);
  a[4] = 6;
  a[5] = 4;
  a.writeUInt16BE(1, 6);
  macBuf(senderMac).copy(a, 8);
  Buffer.from(parseIPv4(senderIp)).copy(a, 14);
  Buffer.from(parseIPv4(targetIp)).copy(a, 24);
  return eth('ff:ff:ff:ff:ff:ff', senderMac, 0x0806, a);
}

export function ipv4(src: string, dst: string, proto: number, payload: Buffer, ttl = 64): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(0x4000, 6);
  h[8] = ttl;
  h[9] = proto;
  Buffer.from(parseIPv4(src)).copy(h, 12);
  Buffer.from(parseIPv4(dst)).copy(h, 16);
  h.writeUInt16BE(checksum(h), 10);
  return Buffer.concat([h, payload]);
}

export function udp(sport: number, dport: number, data = Buffer.alloc(16, 0xab)): Buffer {
  const u = Buffer.alloc(8);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(8 + data.length, 4);
  return Buffer.concat([u, data]);
}

export function tcp(sport: number, dport: number, flags: number): Buffer {
  const t = Buffer.alloc(20);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t[12] = 5 << 4;
  t[13] = flags;
  t.writeUInt16BE(65535, 14);
  return t;
}

/** An ICMP (or ICMPv6) echo message: type, code 0, identifier, sequence, 8 bytes of data. */
export function icmpEcho(type: number, id: number, seq = 1): Buffer {
  const m = Buffer.alloc(16, 0x5a);
  m[0] = type;
  m[1] = 0;
  m.writeUInt16BE(0, 2);
  m.writeUInt16BE(id, 4);
  m.writeUInt16BE(seq, 6);
  m.writeUInt16BE(checksum(m), 2);
  return m;
}

export function ipv6(src: string, dst: string, nexthdr: number, payload: Buffer, hop = 64): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(payload.length, 4);
  h[6] = nexthdr;
  h[7] = hop;
  Buffer.from(parseIPv6(src)).copy(h, 8);
  Buffer.from(parseIPv6(dst)).copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** Solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX). */
export function solicitedNode(ip: string): string {
  const b = parseIPv6(ip);
  const hex = (n: number): string => n.toString(16).padStart(2, '0');
  return `ff02::1:ff${hex(b[13] as number)}:${hex(b[14] as number)}${hex(b[15] as number)}`;
}

/** A Neighbor Solicitation frame from (srcMac, src) for `target`, with a source link-layer option unless src is ::. */
export function neighborSolicitation(srcMac: string, src: string, target: string): Buffer {
  const dst = solicitedNode(target);
  const withOption = src !== '::';
  const icmp = Buffer.alloc(withOption ? 32 : 24);
  icmp[0] = 135;
  Buffer.from(parseIPv6(target)).copy(icmp, 8);
  if (withOption) {
    icmp[24] = 1;
    icmp[25] = 1;
    macBuf(srcMac).copy(icmp, 26);
  }
  icmp.writeUInt16BE(ipv6L4Checksum(Buffer.from(parseIPv6(src)), Buffer.from(parseIPv6(dst)), 58, icmp), 2);
  const b = parseIPv6(dst);
  const dstMac = `33:33:${Array.from(b.subarray(12), (x) => x.toString(16).padStart(2, '0')).join(':')}`;
  return eth(dstMac, srcMac, 0x86dd, ipv6(src, dst, 58, icmp, 255));
}

/** `struct __sk_buff` for BPF_PROG_TEST_RUN: all zero but `ifindex` (the device the packet is on). */
export function skbCtx(ifindex: number): Buffer {
  const ctx = Buffer.alloc(192); // sizeof(struct __sk_buff)
  ctx.writeUInt32LE(ifindex, 40); // offsetof(struct __sk_buff, ifindex)
  return ctx;
}

/** Every flow event waiting in `rb`, decoded. */
export function drainEvents(rb: RingBuffer): DecodedFlowEvent[] {
  const out: DecodedFlowEvent[] = [];
  rb.consumeBuffers((b) => out.push(decodeFlowEvent(b)));
  return out;
}

/** TCP/UDP checksum over the IPv4 pseudo-header; 0 when `l4` (with its checksum in place) is valid. */
export function ipv4L4Checksum(src: Buffer, dst: Buffer, proto: number, l4: Buffer): number {
  const ph = Buffer.alloc(12);
  src.copy(ph, 0);
  dst.copy(ph, 4);
  ph[9] = proto;
  ph.writeUInt16BE(l4.length, 10);
  return ~onesSum(l4, onesSum(ph)) & 0xffff;
}

/** Offset of the checksum in a TCP (6) or UDP (17) header. */
const l4CsumOffset = (proto: number): number => (proto === 6 ? 16 : 6);

/** A copy of the TCP/UDP segment `l4` with its checksum filled in for src → dst (IPv4 or IPv6 by the address text). */
export function withL4Checksum(src: string, dst: string, proto: number, l4: Buffer): Buffer {
  const out = Buffer.from(l4);
  const off = l4CsumOffset(proto);
  out.writeUInt16BE(0, off);
  const v6 = src.includes(':');
  const s = Buffer.from(v6 ? parseIPv6(src) : parseIPv4(src));
  const d = Buffer.from(v6 ? parseIPv6(dst) : parseIPv4(dst));
  let sum = v6 ? ipv6L4Checksum(s, d, proto, out) : ipv4L4Checksum(s, d, proto, out);
  if (sum === 0 && proto === 17) sum = 0xffff;
  out.writeUInt16BE(sum, off);
  return out;
}

/** What {@link parseFrame} reads from an Ethernet + IPv4/IPv6 + TCP/UDP frame. */
export interface ParsedFrame {
  ethDst: string;
  ethSrc: string;
  version: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  sport: number;
  dport: number;
  /** TTL / hop limit. */
  ttl: number;
  /** The IPv4 header checksum verifies (always true for IPv6, which has none). */
  ipChecksumOk: boolean;
  /** The TCP/UDP checksum verifies over the pseudo-header (a UDP/IPv4 checksum of 0 means none: true). */
  l4ChecksumOk: boolean;
  /** The TCP/UDP checksum field as it is. */
  l4Checksum: number;
}

const ipText = (b: Buffer): string => (b.length === 4 ? Array.from(b).join('.') : formatIPv6(new Uint8Array(b)));

/** Parses a frame (no VLAN, no IPv6 extension headers) and verifies its checksums. */
export function parseFrame(frame: Buffer): ParsedFrame {
  const type = frame.readUInt16BE(12);
  const ethDst = macText(frame.subarray(0, 6));
  const ethSrc = macText(frame.subarray(6, 12));
  if (type === 0x0800) {
    const ip = frame.subarray(14);
    const ihl = ((ip[0] as number) & 0x0f) * 4;
    const total = ip.readUInt16BE(2);
    const proto = ip[9] as number;
    const l4 = ip.subarray(ihl, total);
    const s = ip.subarray(12, 16);
    const d = ip.subarray(16, 20);
    const l4Checksum = l4.readUInt16BE(l4CsumOffset(proto));
    return {
      ethDst, ethSrc, version: 4, src: ipText(Buffer.from(s)), dst: ipText(Buffer.from(d)), proto,
      sport: l4.readUInt16BE(0), dport: l4.readUInt16BE(2), ttl: ip[8] as number,
      ipChecksumOk: checksum(ip.subarray(0, ihl)) === 0,
      l4ChecksumOk: (proto === 17 && l4Checksum === 0) || ipv4L4Checksum(Buffer.from(s), Buffer.from(d), proto, Buffer.from(l4)) === 0,
      l4Checksum,
    };
  }
  if (type === 0x86dd) {
    const ip = frame.subarray(14);
    const proto = ip[6] as number;
    const l4 = ip.subarray(40, 40 + ip.readUInt16BE(4));
    const s = Buffer.from(ip.subarray(8, 24));
    const d = Buffer.from(ip.subarray(24, 40));
    const l4Checksum = l4.readUInt16BE(l4CsumOffset(proto));
    return {
      ethDst, ethSrc, version: 6, src: ipText(s), dst: ipText(d), proto,
      sport: l4.readUInt16BE(0), dport: l4.readUInt16BE(2), ttl: ip[7] as number,
      ipChecksumOk: true,
      l4ChecksumOk: ipv6L4Checksum(s, d, proto, Buffer.from(l4)) === 0,
      l4Checksum,
    };
  }
  throw new Error(`not an IP frame (type 0x${type.toString(16)})`);
}

/**
 * The IP packets (no Ethernet header) of one datagram fragmented as a sender's
 * kernel would: IPv4 with the identification `id` and MF on all but the last,
 * IPv6 with a Fragment header (identification `id`, M on all but the last).
 * `l4` is the whole L4 datagram (header and payload, checksum in place); each
 * fragment carries at most `chunk` bytes of it (a multiple of 8).
 */
export function fragmentDatagram(src: string, dst: string, proto: number, l4: Buffer, id: number, chunk: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < l4.length; off += chunk) {
    const part = l4.subarray(off, off + chunk);
    const more = off + chunk < l4.length;
    if (src.includes(':')) {
      const fh = Buffer.alloc(8);
      fh[0] = proto;
      fh.writeUInt16BE(off | (more ? 1 : 0), 2);
      fh.writeUInt32BE(id, 4);
      out.push(ipv6(src, dst, 44, Buffer.concat([fh, part])));
    } else {
      const ip = ipv4(src, dst, proto, part);
      ip.writeUInt16BE(id, 4);
      ip.writeUInt16BE((more ? 0x2000 : 0) | (off / 8), 6);
      ip.writeUInt16BE(0, 10);
      ip.writeUInt16BE(checksum(ip.subarray(0, 20)), 10);
      out.push(ip);
    }
  }
  return out;
}

/** The addresses, fragment offset and payload of one IPv4 or IPv6 fragment frame (as fragmentDatagram builds them). */
export interface ParsedFragment {
  src: string;
  dst: string;
  /** Byte offset of the payload in the datagram. */
  offset: number;
  more: boolean;
  payload: Buffer;
  /** The IPv4 header checksum verifies (true for IPv6). */
  ipChecksumOk: boolean;
}

export function parseFragment(frame: Buffer): ParsedFragment {
  const ip = frame.subarray(14);
  if (frame.readUInt16BE(12) === 0x0800) {
    const ihl = ((ip[0] as number) & 0x0f) * 4;
    const fo = ip.readUInt16BE(6);
    return {
      src: ipText(Buffer.from(ip.subarray(12, 16))), dst: ipText(Buffer.from(ip.subarray(16, 20))),
      offset: (fo & 0x1fff) * 8, more: (fo & 0x2000) !== 0, payload: Buffer.from(ip.subarray(ihl, ip.readUInt16BE(2))),
      ipChecksumOk: checksum(ip.subarray(0, ihl)) === 0,
    };
  }
  const fo = ip.readUInt16BE(42);
  return {
    src: ipText(Buffer.from(ip.subarray(8, 24))), dst: ipText(Buffer.from(ip.subarray(24, 40))),
    offset: fo & 0xfff8, more: (fo & 1) !== 0, payload: Buffer.from(ip.subarray(48, 40 + ip.readUInt16BE(4))),
    ipChecksumOk: true,
  };
}

/**
 * An ICMP (IPv4) or ICMPv6 error from `src` to `dst` quoting the IP packet
 * `quote` (its header and the first bytes of its payload), checksum filled
 * in; returns the IP packet (no Ethernet header).
 */
export function icmpError(src: string, dst: string, type: number, code: number, quote: Buffer): Buffer {
  const m = Buffer.concat([Buffer.alloc(8), quote]);
  m[0] = type;
  m[1] = code;
  if (!src.includes(':')) {
    m.writeUInt16BE(checksum(m), 2);
    return ipv4(src, dst, 1, m);
  }
  m.writeUInt16BE(ipv6L4Checksum(Buffer.from(parseIPv6(src)), Buffer.from(parseIPv6(dst)), 58, m), 2);
  return ipv6(src, dst, 58, m);
}

/** What {@link parseIcmpError} reads from an Ethernet frame holding an ICMP or ICMPv6 error. */
export interface ParsedIcmpError {
  src: string;
  dst: string;
  type: number;
  /** The ICMP checksum verifies (ICMPv6: with its pseudo-header). */
  icmpChecksumOk: boolean;
  quote: { src: string; dst: string; proto: number; sport: number; dport: number; ipChecksumOk: boolean };
}

export function parseIcmpError(frame: Buffer): ParsedIcmpError {
  const ip = frame.subarray(14);
  if (frame.readUInt16BE(12) === 0x0800) {
    const ihl = ((ip[0] as number) & 0x0f) * 4;
    const m = Buffer.from(ip.subarray(ihl, ip.readUInt16BE(2)));
    const q = m.subarray(8);
    const qihl = ((q[0] as number) & 0x0f) * 4;
    return {
      src: ipText(Buffer.from(ip.subarray(12, 16))), dst: ipText(Buffer.from(ip.subarray(16, 20))), type: m[0] as number,
      icmpChecksumOk: checksum(m) === 0,
      quote: {
        src: ipText(Buffer.from(q.subarray(12, 16))), dst: ipText(Buffer.from(q.subarray(16, 20))), proto: q[9] as number,
        sport: q.readUInt16BE(qihl), dport: q.readUInt16BE(qihl + 2), ipChecksumOk: checksum(q.subarray(0, qihl)) === 0,
      },
    };
  }
  const s = Buffer.from(ip.subarray(8, 24));
  const d = Buffer.from(ip.subarray(24, 40));
  const m = Buffer.from(ip.subarray(40, 40 + ip.readUInt16BE(4)));
  const q = m.subarray(8);
  return {
    src: ipText(s), dst: ipText(d), type: m[0] as number, icmpChecksumOk: ipv6L4Checksum(s, d, 58, m) === 0,
    quote: {
      src: ipText(Buffer.from(q.subarray(8, 24))), dst: ipText(Buffer.from(q.subarray(24, 40))), proto: q[6] as number,
      sport: q.readUInt16BE(40), dport: q.readUInt16BE(42), ipChecksumOk: true,
    },
  };
}
