import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BpfUsageError } from '../bpf/errors.js';
import {
  AF_INET, AF_INET6, IFA_ADDRESS, IFA_FLAGS, IFA_LOCAL, IFLA_ADDRESS, IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINK, IFLA_LINKINFO, IFLA_MTU,
  NLA_F_NESTED, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_TABLE,
  RTM_GETLINK, RTNH_F_ONLINK, align4, attrBytes, attrNested, attrS32, attrString, attrU16, attrU32, attrU8, checkIfname,
  decodeErrorBody, decodeIfaddrmsg, decodeIfinfomsg, decodeNdmsg, decodeRtmsg, decodeString, encodeAttrs, encodeIfaddrmsg,
  encodeIfinfomsg, encodeMessage, encodeNdmsg, encodeRtmsg, formatIp, formatMac, parseAttrList, parseAttrs, parseCidr,
  parseIp, parseMac, parseMessages, scopeName, scopeNumber,
} from './message.js';
import { decodeLink } from './link.js';
import { decodeAddress } from './addr.js';
import { decodeRoute } from './route.js';
import { decodeNeighbor } from './neigh.js';

test('align4 rounds up to 4 bytes', () => {
  assert.deepEqual([0, 1, 3, 4, 5, 8].map(align4), [0, 4, 4, 4, 8, 8]);
});

test('encodeMessage writes a nlmsghdr in host order and pads the body', () => {
  const body = Buffer.from([1, 2, 3, 4, 5]);
  const msg = encodeMessage({ type: RTM_GETLINK, flags: NLM_F_REQUEST | NLM_F_DUMP, seq: 0x01020304, pid: 0 }, body);
  assert.equal(msg.length, 24);
  assert.equal(msg.readUInt32LE(0), 21, 'nlmsg_len counts the unpadded body');
  assert.equal(msg.readUInt16LE(4), RTM_GETLINK);
  assert.equal(msg.readUInt16LE(6), 0x301);
  assert.equal(msg.readUInt32LE(8), 0x01020304);
  assert.deepEqual([...msg.subarray(16)], [1, 2, 3, 4, 5, 0, 0, 0]);
});

test('parseMessages splits a datagram and rejects truncated messages', () => {
  const a = encodeMessage({ type: 16, flags: 2, seq: 7, pid: 99 }, Buffer.from('abcdef'));
  const b = encodeMessage({ type: 3, flags: 2, seq: 7, pid: 99 }, Buffer.alloc(4));
  const msgs = parseMessages(Buffer.concat([a, b]));
  assert.equal(msgs.length, 2);
  assert.deepEqual(msgs.map((m) => [m.type, m.flags, m.seq, m.pid]), [[16, 2, 7, 99], [3, 2, 7, 99]]);
  assert.equal(msgs[0]?.body.toString(), 'abcdef');
  assert.equal(msgs[1]?.body.length, 4);
  assert.throws(() => parseMessages(a.subarray(0, 20)), BpfUsageError);
  const bad = Buffer.from(a);
  bad.writeUInt32LE(8, 0);
  assert.throws(() => parseMessages(bad), /malformed netlink message/);
});

test('attributes are length-prefixed, padded to 4 and nest', () => {
  const buf = encodeAttrs([
    attrString(IFLA_IFNAME, 'abc'), // 4 + 4 = 8
    attrString(IFLA_IFNAME, 'abcd'), // 4 + 5 = 9 → 12
    attrU32(IFLA_MTU, 1400),
    attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, 'veth')], true),
  ]);
  assert.equal(buf.readUInt16LE(0), 8);
  assert.equal(buf.toString('latin1', 4, 8), 'abc\0');
  assert.equal(buf.readUInt16LE(8), 9);
  assert.equal(buf.readUInt16LE(20), 8);
  assert.equal(buf.readUInt32LE(24), 1400);
  assert.equal(buf.readUInt16LE(30), IFLA_LINKINFO | NLA_F_NESTED);
  assert.equal(buf.length, 28 + 4 + 12);
  const list = parseAttrList(buf);
  assert.deepEqual(list.map((a) => a.type), [IFLA_IFNAME, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO]);
  const map = parseAttrs(buf);
  assert.equal(decodeString(map.get(IFLA_IFNAME) ?? Buffer.alloc(0)), 'abc', 'the first occurrence wins');
  const info = parseAttrs(map.get(IFLA_LINKINFO) ?? Buffer.alloc(0));
  assert.equal(decodeString(info.get(IFLA_INFO_KIND) ?? Buffer.alloc(0)), 'veth');
  assert.throws(() => parseAttrList(Buffer.from([9, 0, 1, 0, 0])), /malformed netlink attribute/);
});

test('scalar attribute helpers', () => {
  assert.deepEqual([...encodeAttrs([attrU8(1, 0xab)])], [5, 0, 1, 0, 0xab, 0, 0, 0]);
  assert.deepEqual([...encodeAttrs([attrU16(1, 0x1234)])], [6, 0, 1, 0, 0x34, 0x12, 0, 0]);
  assert.equal(encodeAttrs([attrS32(1, -1)]).readInt32LE(4), -1);
  assert.deepEqual([...encodeAttrs([attrBytes(1, Buffer.from([1, 2]))])], [6, 0, 1, 0, 1, 2, 0, 0]);
  assert.throws(() => encodeAttrs([attrBytes(1, Buffer.alloc(70_000))]), /too long/);
});

test('fixed headers round-trip with the kernel layouts', () => {
  const ifi = encodeIfinfomsg({ family: AF_INET, type: 1, index: 7, flags: 1, change: 1 });
  assert.equal(ifi.length, 16);
  assert.deepEqual([...ifi], [2, 0, 1, 0, 7, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(decodeIfinfomsg(ifi), { family: AF_INET, type: 1, index: 7, flags: 1, change: 1 });

  const ifa = encodeIfaddrmsg({ family: AF_INET6, prefixLen: 64, flags: 0x102, scope: 253, index: 9 });
  assert.deepEqual([...ifa], [10, 64, 2, 253, 9, 0, 0, 0], 'ifa_flags keeps the low 8 bits');
  assert.deepEqual(decodeIfaddrmsg(ifa), { family: AF_INET6, prefixLen: 64, flags: 2, scope: 253, index: 9 });

  const rt = encodeRtmsg({ family: AF_INET, dstLen: 24, table: 254, protocol: 3, scope: 0, type: 1, flags: RTNH_F_ONLINK });
  assert.deepEqual([...rt], [2, 24, 0, 0, 254, 3, 0, 1, 4, 0, 0, 0]);
  assert.equal(decodeRtmsg(rt).flags, RTNH_F_ONLINK);

  const nd = encodeNdmsg({ family: AF_INET, ifindex: 3, state: 0x80 });
  assert.deepEqual([...nd], [2, 0, 0, 0, 3, 0, 0, 0, 0x80, 0, 0, 0]);
  assert.deepEqual(decodeNdmsg(nd), { family: AF_INET, ifindex: 3, state: 0x80, flags: 0, type: 0 });
  assert.throws(() => decodeRtmsg(Buffer.alloc(4)), /truncated rtmsg/);
});

function errorBody(errno: number, request: Buffer, tlvs: Buffer, capped: boolean): Buffer {
  const head = Buffer.alloc(4);
  head.writeInt32LE(-errno);
  return Buffer.concat([head, capped ? request.subarray(0, 16) : request, tlvs]);
}

test('decodeErrorBody reads errno and the extended ack, capped or not', () => {
  const request = encodeMessage({ type: 16, flags: 5, seq: 1, pid: 0 }, Buffer.alloc(20));
  const tlvs = encodeAttrs([attrString(1, 'Invalid prefix for given prefix length'), attrU32(2, 36)]);
  for (const capped of [true, false]) {
    const flags = NLM_F_ACK_TLVS | (capped ? NLM_F_CAPPED : 0);
    const e = decodeErrorBody(errorBody(22, request, tlvs, capped), flags);
    assert.deepEqual(e, { errno: 22, message: 'Invalid prefix for given prefix length', badAttrOffset: 36 });
  }
  assert.deepEqual(decodeErrorBody(errorBody(17, request, Buffer.alloc(0), true), NLM_F_CAPPED), { errno: 17 });
  assert.deepEqual(decodeErrorBody(errorBody(0, request, Buffer.alloc(0), true), NLM_F_CAPPED), { errno: 0 });
  // NLMSG_DONE: the TLVs follow the int directly.
  const done = Buffer.concat([Buffer.from([0xf9, 0xff, 0xff, 0xff]), encodeAttrs([attrString(1, 'dump failed')])]);
  assert.deepEqual(decodeErrorBody(done, NLM_F_ACK_TLVS, true), { errno: 7, message: 'dump failed' });
  assert.equal(NLMSG_ERROR, 2);
});

test('IP, CIDR and MAC parsing', () => {
  assert.deepEqual(parseIp('10.199.0.1'), { family: 4, bytes: Buffer.from([10, 199, 0, 1]) });
  assert.equal(parseIp('fd99::1').bytes.length, 16);
  assert.deepEqual(parseCidr('10.199.0.0/16'), { family: 4, bytes: Buffer.from([10, 199, 0, 0]), prefixLen: 16 });
  assert.equal(parseCidr('fd99:1::2').prefixLen, 128, 'no prefix: a host address');
  assert.equal(parseCidr('0.0.0.0/0').prefixLen, 0);
  for (const bad of ['10.0.0.1/33', 'fd99::/129', '10.0.0.1/', '10.0.0.1/x', '10.0.0', 'fd99:::1', '', 'default']) {
    assert.throws(() => parseCidr(bad), BpfUsageError, bad);
  }
  assert.equal(formatIp(Buffer.from([10, 199, 7, 1])), '10.199.7.1');
  assert.equal(formatIp(parseIp('fd99:0:0:0:0:0:0:1').bytes), 'fd99::1');
  assert.throws(() => formatIp(Buffer.alloc(5)), BpfUsageError);
  assert.deepEqual([...parseMac('02:99:AB:00:00:01')], [2, 0x99, 0xab, 0, 0, 1]);
  assert.equal(formatMac(parseMac('02-99-ab-00-00-01')), '02:99:ab:00:00:01');
  for (const bad of ['02:99:ab:00:00', '02:99:ab:00:00:0g', 'x']) assert.throws(() => parseMac(bad), BpfUsageError, bad);
});

test('interface names and scopes are checked', () => {
  checkIfname('wgl0');
  checkIfname('a'.repeat(15));
  for (const bad of ['', 'a'.repeat(16), 'a b', 'a/b', 'a:1', '..']) assert.throws(() => checkIfname(bad), BpfUsageError, bad);
  assert.equal(scopeNumber('link'), 253);
  assert.equal(scopeNumber(200), 200);
  assert.throws(() => scopeNumber(256), BpfUsageError);
  assert.equal(scopeName(254), 'host');
  assert.equal(scopeName(17), 17);
});

test('decoders turn kernel replies into plain objects', () => {
  const link = decodeLink(Buffer.concat([
    encodeIfinfomsg({ index: 5, flags: 0x1 | 0x10000 }),
    encodeAttrs([
      attrString(IFLA_IFNAME, 'wgl0'), attrU32(IFLA_MTU, 1400), attrBytes(IFLA_ADDRESS, parseMac('02:00:00:00:00:05')),
      attrU32(IFLA_LINK, 6), attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, 'veth')]),
    ]),
  ]));
  assert.deepEqual(link, { ifindex: 5, name: 'wgl0', mtu: 1400, up: true, flags: 0x10001, mac: '02:00:00:00:00:05', kind: 'veth', link: 6 });

  const addr = decodeAddress(Buffer.concat([
    encodeIfaddrmsg({ family: AF_INET, prefixLen: 24, scope: 0, index: 5 }),
    encodeAttrs([attrBytes(IFA_ADDRESS, parseIp('10.199.0.1').bytes), attrBytes(IFA_LOCAL, parseIp('10.199.0.1').bytes), attrU32(IFA_FLAGS, 0x80)]),
  ]));
  assert.deepEqual(addr, { ifindex: 5, family: 4, address: '10.199.0.1', prefixLen: 24, cidr: '10.199.0.1/24', scope: 'universe', flags: 0x80 });

  const route = decodeRoute(Buffer.concat([
    encodeRtmsg({ family: AF_INET6, dstLen: 0, table: 254, protocol: 3, type: 1, flags: RTNH_F_ONLINK }),
    encodeAttrs([attrU32(RTA_TABLE, 254), attrBytes(RTA_GATEWAY, parseIp('fd99::1').bytes), attrU32(RTA_OIF, 5)]),
  ]));
  assert.deepEqual(route, {
    family: 6, dst: 'default', table: 254, protocol: 3, scope: 'universe', type: 'unicast', flags: RTNH_F_ONLINK, onlink: true,
    gateway: 'fd99::1', ifindex: 5,
  });
  const net = decodeRoute(Buffer.concat([encodeRtmsg({ family: AF_INET, dstLen: 16, table: 254 }), encodeAttrs([attrBytes(RTA_DST, parseIp('10.199.0.0').bytes)])]));
  assert.equal(net?.dst, '10.199.0.0/16');

  const neigh = decodeNeighbor(Buffer.concat([
    encodeNdmsg({ family: AF_INET, ifindex: 5, state: 0x80 }),
    encodeAttrs([attrBytes(1, parseIp('10.199.0.9').bytes), attrBytes(2, parseMac('02:00:00:00:00:09'))]),
  ]));
  assert.deepEqual(neigh, { ifindex: 5, family: 4, ip: '10.199.0.9', state: 0x80, states: ['PERMANENT'], flags: 0, mac: '02:00:00:00:00:09' });
  assert.equal(decodeNeighbor(encodeNdmsg({ family: 7 })), undefined, 'bridge FDB entries are skipped');
});
