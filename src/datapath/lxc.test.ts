/**
 * The endpoint datapath (bpf/lxc.bpf.c): crafted frames through
 * BPF_PROG_TEST_RUN (on the devices of a throw-away namespace, so skb->ifindex picks the
 * `lxc_config` entry), then real traffic between three endpoint namespaces
 * joined to a node namespace by veths, with no bridge and no address on the
 * host side (the gateway's ARP and neighbor answers come from eBPF), all
 * served by one pair of programs loaded once.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync, readdirSync } from 'node:fs';
import { parseIPv6 } from '../bpf/codec.js';
import type { BpfMap, PerCpuMap } from '../bpf/map.js';
import { RingBuffer } from '../bpf/ringbuf.js';
import { Link } from '../bpf/link/link.js';
import { inNetns } from '../netlink/netns.js';
import { skipUnlessRoot, requireTools, isRoot } from '../../test/helpers/root.js';
import { mountTempBpffs, type TempBpffs } from '../../test/helpers/bpffs.js';
import { Cleanup, createNetns, createVethPair, ifindexIn, type Netns } from '../../test/helpers/netns.js';
import { vethEndpoints, type VethEndpoint } from './test-harness.js';
import { ping, tcpExchange, udpExchange } from '../../test/helpers/traffic.js';
import {
  attachEndpoint, decodeFlowEvent, detachEndpointPrograms, endpointAttached, endpointLinkDir, endpointProgramsDir,
  endpointsMap, loadEndpointDatapath, lxcConfigMap, metricsMap, openEvents,
  type DecodedFlowEvent, type EndpointConfig, type EndpointDatapath, type EndpointDatapathConfig,
} from './lxc.js';
import type { EndpointInfo } from './codecs/endpoint.js';
import { METRIC_EGRESS, METRIC_INGRESS, type MetricsKey, type MetricsValue } from './codecs/metrics.js';
import {
  FLOW_EVENT_DROP, FLOW_EVENT_TRACE, FLOW_FLAGS, OBS_FROM_ENDPOINT, OBS_TO_ENDPOINT, OBS_TO_STACK, VERDICT_DROPPED, VERDICT_FORWARDED,
} from './codecs/flow-event.js';
import { dropReasonCode, REASON_FORWARDED } from './drop-reasons.js';
import {
  TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, arpRequest, checksum, drainEvents, eth, ipv4, ipv6, ipv6L4Checksum, macText,
  neighborSolicitation, skbCtx, tcp, udp,
} from './test-frames.js';

const INVALID_SOURCE_MAC = dropReasonCode('INVALID_SOURCE_MAC');
const INVALID_SOURCE_IP = dropReasonCode('INVALID_SOURCE_IP');
const UNSUPPORTED_L3_PROTOCOL = dropReasonCode('UNSUPPORTED_L3_PROTOCOL');
const TTL_EXCEEDED = dropReasonCode('TTL_EXCEEDED');
const NO_CONFIG = dropReasonCode('NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION');

// ---------------------------------------------------------------------------
// BPF_PROG_TEST_RUN

const cleanup = new Cleanup();
after(() => cleanup.run());

describe('from_endpoint on crafted frames (BPF_PROG_TEST_RUN)', () => {
  const DP: EndpointDatapathConfig = { pinDir: '', routerIpv4: '10.199.250.1', routerIpv6: 'fd99:250::1' };
  const EP = {
    endpointId: 7,
    ipv4: '10.199.200.7',
    ipv6: 'fd99:200::7',
    mac: '02:00:00:00:00:07',
    hostMac: '02:00:00:00:01:07',
    routerIpv4: DP.routerIpv4 as string,
    routerIpv6: DP.routerIpv6 as string,
  };
  const PEER: EndpointInfo = { ifindex: 4242, endpointId: 8, mac: '02:00:00:00:00:08', nodeMac: '02:00:00:00:01:08', flags: 0, identity: 1008 };
  let dp: EndpointDatapath;
  let rb: RingBuffer;
  let fs: TempBpffs;
  let metrics: PerCpuMap<MetricsKey, MetricsValue>;
  /** Where the test runs happen: a namespace with two devices (a veth pair), the endpoint's and one nobody configured. */
  let runNs: Netns;
  let epIfindex: number;
  let strangerIfindex: number;

  before(() => {
    if (!isRoot) return;
    fs = mountTempBpffs();
    cleanup.add(() => fs.unmount(), 'bpffs');
    DP.pinDir = join(fs.path, 'waggle');
    dp = loadEndpointDatapath(DP);
    cleanup.add(() => dp.close(), 'endpoint datapath');
    rb = openEvents(DP.pinDir);
    cleanup.add(() => rb.close(), 'events reader');
    metrics = metricsMap(DP.pinDir);
    cleanup.add(() => metrics.close(), 'metrics map');
    runNs = createNetns('wg-lxc-run');
    cleanup.add(() => runNs.remove(), 'test-run netns');
    createVethPair({ a: { netns: runNs, name: 'wgdep' }, b: { netns: runNs, name: 'wgdx' } });
    epIfindex = ifindexIn(runNs, 'wgdep');
    strangerIfindex = ifindexIn(runNs, 'wgdx');
    // What attachEndpoint writes first; the programs are run directly, not attached.
    dp.config.update(epIfindex, {
      endpointId: EP.endpointId, ipv4: EP.ipv4, ipv6: EP.ipv6, mac: EP.mac, hostMac: EP.hostMac, flags: 0, identity: 1007,
    });
    const eps = endpointsMap(DP.pinDir);
    try {
      eps.update('10.199.200.8', PEER);
      eps.update('fd99:200::8', PEER);
    } finally {
      eps.close();
    }
  });

  const runOn = (program: 'from_endpoint' | 'to_endpoint', frame: Buffer, ifindex: number): { retval: number; data: Buffer; events: DecodedFlowEvent[] } => {
    rb.skip();
    const r = inNetns(runNs.path, () => dp.program(program).testRun({ data: frame, ctx: skbCtx(ifindex), ctxOutSize: 256 }));
    return { retval: r.retval, data: r.data, events: drainEvents(rb) };
  };
  const run = (frame: Buffer): { retval: number; data: Buffer; events: DecodedFlowEvent[] } => runOn('from_endpoint', frame, epIfindex);

  test('a device without an lxc_config entry: every packet dropped (NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION), both ways', (t) => {
    if (skipUnlessRoot(t)) return;
    const frame = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 17, udp(1000, 2000)));
    const key = { reason: NO_CONFIG, direction: METRIC_EGRESS };
    const before = metrics.lookupSum(key)?.packets ?? 0;
    for (const f of [frame, arpRequest(EP.mac, '10.199.200.7', '10.199.250.1')]) {
      const r = runOn('from_endpoint', f, strangerIfindex);
      assert.equal(r.retval, TC_ACT_SHOT);
      assert.equal(r.events.length, 1);
      const e = r.events[0] as DecodedFlowEvent;
      assert.deepEqual(
        [e.typeName, e.verdictName, e.dropReason, e.dropReasonName, e.obsPointName, e.endpointId, e.srcEndpoint, e.ifindex],
        ['DROP', 'DROPPED', 165, 'NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION', 'FROM_ENDPOINT', 0, 0, strangerIfindex],
      );
    }
    assert.equal((metrics.lookupSum(key)?.packets ?? 0) - before, 2);
    // The event still says what the packet was.
    const e = runOn('from_endpoint', frame, strangerIfindex).events[0] as DecodedFlowEvent;
    assert.deepEqual([e.srcIp, e.dstIp, e.ipProto, e.srcPort, e.dstPort], ['10.199.200.7', '10.199.200.8', 17, 1000, 2000]);

    const toKey = { reason: NO_CONFIG, direction: METRIC_INGRESS };
    const beforeTo = metrics.lookupSum(toKey)?.packets ?? 0;
    const down = runOn('to_endpoint', eth(EP.mac, EP.hostMac, 0x0800, ipv4('10.199.201.1', '10.199.200.7', 6, tcp(80, 40000, 0x12))), strangerIfindex);
    assert.equal(down.retval, TC_ACT_SHOT);
    assert.deepEqual([down.events[0]?.dropReason, down.events[0]?.obsPointName, down.events[0]?.dstEndpoint], [NO_CONFIG, 'TO_ENDPOINT', 0]);
    assert.equal((metrics.lookupSum(toKey)?.packets ?? 0) - beforeTo, 1);

    // The same frames on the configured device pass (the SYN-ACK as the reply
    // of the endpoint's SYN: conntrack lets no SYN-ACK open a connection).
    assert.equal(run(frame).retval, TC_ACT_REDIRECT);
    assert.equal(run(eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.201.1', 6, tcp(40001, 80, 0x02)))).retval, TC_ACT_OK);
    const up = runOn('to_endpoint', eth(EP.mac, EP.hostMac, 0x0800, ipv4('10.199.201.1', '10.199.200.7', 6, tcp(80, 40001, 0x12))), epIfindex);
    assert.equal(up.retval, TC_ACT_OK);
    assert.deepEqual(
      [up.events[0]?.typeName, up.events[0]?.endpointId, up.events[0]?.dstEndpoint, up.events[0]?.srcIdentity, up.events[0]?.dstIdentity, up.events[0]?.flags],
      ['TRACE', 7, 7, 2, 1007, FLOW_FLAGS.REPLY_KNOWN | FLOW_FLAGS.IS_REPLY],
    );
  });

  test('the lxc_config entry is the endpoint\'s identity: a change applies to the next packet, no reload', (t) => {
    if (skipUnlessRoot(t)) return;
    const frame = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 17, udp(1001, 2000)));
    const cfg = dp.config.lookup(epIfindex);
    assert.ok(cfg);
    try {
      dp.config.update(epIfindex, { ...cfg, ipv4: '10.199.200.9' });
      const r = run(frame);
      assert.equal(r.retval, TC_ACT_SHOT);
      assert.equal(r.events[0]?.dropReason, INVALID_SOURCE_IP);
      dp.config.update(epIfindex, { ...cfg, endpointId: 9 });
      const ok = run(eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 17, udp(1002, 2000))));
      assert.equal(ok.retval, TC_ACT_REDIRECT);
      assert.deepEqual([ok.events[0]?.endpointId, ok.events[0]?.srcEndpoint], [9, 9]);
    } finally {
      dp.config.update(epIfindex, cfg);
    }
  });

  test('ARP request for the router IP: answered in place and sent back out (TC_ACT_REDIRECT)', (t) => {
    if (skipUnlessRoot(t)) return;
    const { retval, data } = run(arpRequest(EP.mac, '10.199.200.7', '10.199.250.1'));
    assert.equal(retval, TC_ACT_REDIRECT);
    assert.equal(macText(data.subarray(0, 6)), EP.mac, 'to the requester');
    assert.equal(macText(data.subarray(6, 12)), EP.hostMac, 'from the host-side veth');
    assert.equal(data.readUInt16BE(12), 0x0806);
    const arp = data.subarray(14);
    assert.deepEqual([arp.readUInt16BE(0), arp.readUInt16BE(2), arp[4], arp[5]], [1, 0x0800, 6, 4]);
    assert.equal(arp.readUInt16BE(6), 2, 'opcode 2 (reply)');
    assert.equal(macText(arp.subarray(8, 14)), EP.hostMac, 'sender MAC = host MAC');
    assert.deepEqual([...arp.subarray(14, 18)], [10, 199, 250, 1], 'sender IP = router IP');
    assert.equal(macText(arp.subarray(18, 24)), EP.mac, 'target MAC = requester');
    assert.deepEqual([...arp.subarray(24, 28)], [10, 199, 200, 7], 'target IP = requester');
  });

  test('ARP for another address passes to the stack; ARP from a foreign sender IP is dropped', (t) => {
    if (skipUnlessRoot(t)) return;
    assert.equal(run(arpRequest(EP.mac, '10.199.200.7', '10.199.200.8')).retval, TC_ACT_OK);
    const spoof = run(arpRequest(EP.mac, '10.199.200.66', '10.199.250.1'));
    assert.equal(spoof.retval, TC_ACT_SHOT);
    assert.equal(spoof.events[0]?.dropReason, INVALID_SOURCE_IP);
  });

  for (const [what, src] of [['its own address', 'fd99:200::7'], ['a link-local address', 'fe80::7'], [':: (duplicate address detection)', '::']] as const) {
    test(`neighbor solicitation for the router IPv6 from ${what}: a valid neighbor advertisement`, (t) => {
      if (skipUnlessRoot(t)) return;
      const { retval, data } = run(neighborSolicitation(EP.mac, src, EP.routerIpv6 as string));
      assert.equal(retval, TC_ACT_REDIRECT);
      assert.equal(data.length, 14 + 40 + 32);
      const dad = src === '::';
      assert.equal(macText(data.subarray(0, 6)), dad ? '33:33:00:00:00:01' : EP.mac);
      assert.equal(macText(data.subarray(6, 12)), EP.hostMac);
      assert.equal(data.readUInt16BE(12), 0x86dd);
      const ip = data.subarray(14, 54);
      assert.equal(ip[0] as number >> 4, 6);
      assert.equal(ip.readUInt16BE(4), 32, 'payload length');
      assert.equal(ip[6], 58, 'ICMPv6');
      assert.equal(ip[7], 255, 'hop limit 255');
      assert.deepEqual(ip.subarray(8, 24), Buffer.from(parseIPv6(EP.routerIpv6 as string)), 'from the router IP');
      assert.deepEqual(ip.subarray(24, 40), Buffer.from(parseIPv6(dad ? 'ff02::1' : src)), 'to the solicitor (all nodes for DAD)');
      const na = data.subarray(54);
      assert.equal(na[0], 136, 'neighbor advertisement');
      assert.equal(na[1], 0);
      assert.equal(ipv6L4Checksum(ip.subarray(8, 24), ip.subarray(24, 40), 58, na), 0, 'ICMPv6 checksum verifies');
      assert.equal(na[4], dad ? 0xa0 : 0xe0, 'flags: router, override, solicited unless DAD');
      assert.deepEqual(na.subarray(8, 24), Buffer.from(parseIPv6(EP.routerIpv6 as string)), 'target = router IP');
      assert.deepEqual([na[24], na[25]], [2, 1], 'target link-layer address option');
      assert.equal(macText(na.subarray(26, 32)), EP.hostMac);
    });
  }

  test('neighbor solicitation for the router from a foreign global address is dropped as spoofed', (t) => {
    if (skipUnlessRoot(t)) return;
    const r = run(neighborSolicitation(EP.mac, 'fd99:200::66', EP.routerIpv6 as string));
    assert.equal(r.retval, TC_ACT_SHOT);
    assert.equal(r.events[0]?.dropReason, INVALID_SOURCE_IP);
  });

  test('spoofed source IP: TC_ACT_SHOT, a drop event (INVALID_SOURCE_IP) and a metrics count', (t) => {
    if (skipUnlessRoot(t)) return;
    const key = { reason: INVALID_SOURCE_IP, direction: METRIC_EGRESS };
    const before4 = metrics.lookupSum(key)?.packets ?? 0;
    const frame = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.66', '10.199.200.8', 17, udp(1000, 2000)));
    const r = run(frame);
    assert.equal(r.retval, TC_ACT_SHOT);
    assert.equal(r.events.length, 1);
    const e = r.events[0] as DecodedFlowEvent;
    assert.equal(e.type, FLOW_EVENT_DROP);
    assert.equal(e.verdict, VERDICT_DROPPED);
    assert.equal(e.dropReason, INVALID_SOURCE_IP);
    assert.equal(e.dropReasonName, 'INVALID_SOURCE_IP');
    assert.equal(e.obsPoint, OBS_FROM_ENDPOINT);
    assert.equal(e.endpointId, 7);
    assert.equal(e.srcEndpoint, 7);
    assert.equal(e.srcIp, '10.199.200.66');
    assert.equal(e.dstIp, '10.199.200.8');
    assert.deepEqual([e.ipProto, e.srcPort, e.dstPort], [17, 1000, 2000]);
    assert.equal(e.pktLen, frame.length);
    assert.ok(e.line > 0, 'the drop names its source line');
    assert.equal((metrics.lookupSum(key)?.packets ?? 0) - before4, 1);

    const r6 = run(eth(EP.hostMac, EP.mac, 0x86dd, ipv6('fd99:200::66', 'fd99:200::8', 17, udp(1000, 2000))));
    assert.equal(r6.retval, TC_ACT_SHOT);
    assert.equal(r6.events[0]?.dropReason, INVALID_SOURCE_IP);
    assert.equal(r6.events[0]?.srcIp, 'fd99:200::66');
    // Link-local sources are allowed only for ICMPv6 link control, never for data.
    const ll = run(eth(EP.hostMac, EP.mac, 0x86dd, ipv6('fe80::7', 'fd99:200::8', 17, udp(1000, 2000))));
    assert.equal(ll.retval, TC_ACT_SHOT);
    assert.equal(ll.events[0]?.dropReason, INVALID_SOURCE_IP);
  });

  test('spoofed source MAC: TC_ACT_SHOT and a drop event (INVALID_SOURCE_MAC)', (t) => {
    if (skipUnlessRoot(t)) return;
    const r = run(eth(EP.hostMac, '02:00:00:00:00:66', 0x0800, ipv4('10.199.200.7', '10.199.200.8', 17, udp(1, 2))));
    assert.equal(r.retval, TC_ACT_SHOT);
    assert.equal(r.events.length, 1);
    assert.equal(r.events[0]?.dropReason, INVALID_SOURCE_MAC);
    assert.equal(r.events[0]?.typeName, 'DROP');
  });

  test('unknown L3 protocol: dropped with UNSUPPORTED_L3_PROTOCOL', (t) => {
    if (skipUnlessRoot(t)) return;
    const r = run(eth(EP.hostMac, EP.mac, 0x88cc, Buffer.alloc(46)));
    assert.equal(r.retval, TC_ACT_SHOT);
    assert.equal(r.events[0]?.dropReason, UNSUPPORTED_L3_PROTOCOL);
    assert.equal(r.events[0]?.ethProto, 0x88cc);
  });

  test('IPv4 to a local endpoint: router MACs, TTL - 1, valid header checksum, redirected to its peer', (t) => {
    if (skipUnlessRoot(t)) return;
    const frame = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 17, udp(40000, 53), 64));
    const r = run(frame);
    assert.equal(r.retval, TC_ACT_REDIRECT);
    assert.equal(macText(r.data.subarray(0, 6)), PEER.mac, 'to the destination endpoint');
    assert.equal(macText(r.data.subarray(6, 12)), PEER.nodeMac, 'from its router MAC');
    const ip = r.data.subarray(14, 34);
    assert.equal(ip[8], 63, 'TTL - 1');
    assert.equal(checksum(ip), 0, 'IPv4 header checksum verifies');
    assert.deepEqual(r.data.subarray(34), frame.subarray(34), 'payload unchanged');
    assert.equal(r.events.length, 1);
    const e = r.events[0] as DecodedFlowEvent;
    assert.deepEqual(
      [e.type, e.obsPoint, e.verdict, e.endpointId, e.srcEndpoint, e.dstEndpoint],
      [FLOW_EVENT_TRACE, OBS_TO_ENDPOINT, VERDICT_FORWARDED, 7, 7, 8],
    );
    assert.deepEqual([e.srcIp, e.dstIp, e.ipProto, e.srcPort, e.dstPort], ['10.199.200.7', '10.199.200.8', 17, 40000, 53]);
    // Identities from lxc_config (source) and the endpoints map (destination); a new connection, no policy.
    assert.deepEqual(
      [e.srcIdentity, e.dstIdentity, e.flags, e.egressCookie, e.ingressCookie, e.matchType],
      [1007, 1008, FLOW_FLAGS.REPLY_KNOWN, 0, 0, 0],
    );
  });

  test('IPv6 to a local endpoint: router MACs, hop limit - 1, redirected', (t) => {
    if (skipUnlessRoot(t)) return;
    const r = run(eth(EP.hostMac, EP.mac, 0x86dd, ipv6('fd99:200::7', 'fd99:200::8', 6, tcp(40000, 80, 0x02), 9)));
    assert.equal(r.retval, TC_ACT_REDIRECT);
    assert.equal(macText(r.data.subarray(0, 6)), PEER.mac);
    assert.equal(macText(r.data.subarray(6, 12)), PEER.nodeMac);
    assert.equal(r.data[14 + 7], 8, 'hop limit - 1');
    assert.deepEqual(r.events[0]?.tcpFlagNames, ['SYN']);
    assert.equal(r.events[0]?.dstEndpoint, 8);
  });

  test('TTL 1 to a local endpoint: dropped with TTL_EXCEEDED', (t) => {
    if (skipUnlessRoot(t)) return;
    const r = run(eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 17, udp(1, 2), 1)));
    assert.equal(r.retval, TC_ACT_SHOT);
    assert.equal(r.events[0]?.dropReason, TTL_EXCEEDED);
  });

  test('to an address that is not local: TC_ACT_OK (the stack routes it), traced TO_STACK', (t) => {
    if (skipUnlessRoot(t)) return;
    const r = run(eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.201.1', 17, udp(40001, 53))));
    assert.equal(r.retval, TC_ACT_OK);
    assert.equal(r.data[14 + 8], 64, 'untouched');
    assert.equal(r.events[0]?.obsPoint, OBS_TO_STACK);
    assert.equal(r.events[0]?.dstEndpoint, 0);
    const r6 = run(eth(EP.hostMac, EP.mac, 0x86dd, ipv6('fd99:200::7', 'fd99:201::1', 17, udp(40001, 53))));
    assert.equal(r6.retval, TC_ACT_OK);
  });

  test('monitor aggregation: one trace per flow per interval, but every SYN/FIN/RST and every drop', (t) => {
    if (skipUnlessRoot(t)) return;
    const fwdKey = { reason: REASON_FORWARDED, direction: METRIC_EGRESS };
    const before = metrics.lookupSum(fwdKey)?.packets ?? 0;
    const flow = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 17, udp(41000, 9999)));
    const seen = [run(flow), run(flow), run(flow)].map((r) => r.events.length);
    assert.deepEqual(seen, [1, 0, 0], 'a known flow is traced once per interval');
    assert.equal((metrics.lookupSum(fwdKey)?.packets ?? 0) - before, 3, 'but every packet is counted');
    const other = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 17, udp(41001, 9999)));
    assert.equal(run(other).events.length, 1, 'a new flow is traced');
    const syn = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 6, tcp(41002, 80, 0x02)));
    const ack = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 6, tcp(41002, 80, 0x10)));
    const fin = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.7', '10.199.200.8', 6, tcp(41002, 80, 0x11)));
    assert.deepEqual([run(syn), run(syn), run(ack), run(fin)].map((r) => r.events.length), [1, 1, 0, 1]);
    const spoof = eth(EP.hostMac, EP.mac, 0x0800, ipv4('10.199.200.66', '10.199.200.8', 17, udp(41003, 9999)));
    assert.deepEqual([run(spoof), run(spoof), run(spoof)].map((r) => r.events.length), [1, 1, 1], 'drops are never aggregated');
  });
});

// ---------------------------------------------------------------------------
// Real traffic: three endpoints on one node

type Endpoint = VethEndpoint;

const endpointConfig = (ep: Endpoint): EndpointConfig => ({
  endpointId: ep.id, hostIfindex: ep.hostIfindex, ipv4: ep.ipv4, ipv6: ep.ipv6, mac: ep.mac, hostMac: ep.hostMac, identity: 1000 + ep.id,
});

const ROUTER4 = '10.199.250.1';
const ROUTER6 = 'fd99:250::1';

describe('endpoints on one node: real traffic, no bridge, no host-side addresses', () => {
  let node: Netns;
  let fs: TempBpffs;
  let pinDir: string;
  let dp: EndpointDatapath;
  const eps: Endpoint[] = [];
  let rb: RingBuffer;
  const events: DecodedFlowEvent[] = [];
  const collect = (): DecodedFlowEvent[] => {
    rb.consumeBuffers((b) => events.push(decodeFlowEvent(b)));
    return events;
  };

  before(() => {
    if (!isRoot) return;
    fs = mountTempBpffs();
    cleanup.add(() => fs.unmount(), 'bpffs');
    pinDir = join(fs.path, 'waggle');
    const made = vethEndpoints(cleanup, { prefix: 'wg-lxc', ifPrefix: 'wlxc', count: 3, idBase: 100, address: (i) => ({ ipv4: `10.199.200.${10 + i}`, ipv6: `fd99:200::${10 + i}` }) });
    node = made.node;
    eps.push(...made.eps);
  });

  test('load once, attach to every endpoint (tcx, pinned) and fill the endpoints map', (t) => {
    if (skipUnlessRoot(t) || requireTools(t, 'ip', 'ping')) return;
    dp = loadEndpointDatapath({ pinDir, routerIpv4: ROUTER4, routerIpv6: ROUTER6 });
    cleanup.add(() => dp.close(), 'endpoint datapath');
    assert.equal(dp.reused, false, 'nothing pinned yet: loaded');
    for (const ep of eps) {
      const att = inNetns(node.path, () => attachEndpoint(dp, endpointConfig(ep)));
      cleanup.add(() => { detachEndpointPrograms(pinDir, ep.id); }, `links of endpoint ${ep.id}`);
      assert.equal(att.ingress.kind, 'tcx');
      assert.ok(att.pinnedAt, 'tcx links are pinned');
      assert.equal(att.pinnedAt.ingress, join(endpointLinkDir(pinDir, ep.id), 'from_endpoint'));
      // The handles can go: the pins keep the programs attached.
      att.ingress.close();
      att.egress.close();
      assert.ok(endpointAttached(dp, endpointConfig(ep)));
    }
    const configs = lxcConfigMap(pinDir);
    try {
      assert.deepEqual(
        [...configs.entries()].sort(([a], [b]) => a - b),
        eps.map((ep) => [ep.hostIfindex, { endpointId: ep.id, ipv4: ep.ipv4, ipv6: ep.ipv6, mac: ep.mac, hostMac: ep.hostMac, flags: 0, identity: 1000 + ep.id }]).sort(([a], [b]) => (a as number) - (b as number)),
        'one lxc_config entry per host-side veth',
      );
    } finally {
      configs.close();
    }
    const map: BpfMap<string, EndpointInfo> = endpointsMap(pinDir);
    try {
      for (const ep of eps) {
        const info = { ifindex: ep.hostIfindex, endpointId: ep.id, mac: ep.mac, nodeMac: ep.hostMac, flags: 0, identity: 1000 + ep.id };
        map.update(ep.ipv4, info);
        map.update(ep.ipv6, info);
      }
      assert.equal(map.count(), 6);
      assert.deepEqual(map.lookup(eps[1]?.ipv6 as string)?.endpointId, 102);
    } finally {
      map.close();
    }
    rb = openEvents(pinDir);
    cleanup.add(() => rb.close(), 'events reader');

    // Inside each endpoint: /32 and /128, the router reachable on-link, default via it.
    for (const ep of eps) {
      ep.ns.exec(['ip', 'addr', 'add', `${ep.ipv4}/32`, 'dev', 'eth0']);
      ep.ns.exec(['ip', '-6', 'addr', 'add', `${ep.ipv6}/128`, 'dev', 'eth0', 'nodad']);
      ep.ns.exec(['ip', 'route', 'add', ROUTER4, 'dev', 'eth0', 'scope', 'link']);
      ep.ns.exec(['ip', 'route', 'add', 'default', 'via', ROUTER4]);
      ep.ns.exec(['ip', '-6', 'route', 'add', ROUTER6, 'dev', 'eth0']);
      ep.ns.exec(['ip', '-6', 'route', 'add', 'default', 'via', ROUTER6]);
    }
  });

  test('one pair of programs serves every endpoint: the same program ids on every veth', (t) => {
    if (skipUnlessRoot(t)) return;
    const ids = { from_endpoint: dp.program('from_endpoint').info().id, to_endpoint: dp.program('to_endpoint').info().id };
    assert.notEqual(ids.from_endpoint, ids.to_endpoint);
    for (const ep of eps) {
      for (const prog of ['from_endpoint', 'to_endpoint'] as const) {
        const l = Link.openPinned(join(endpointLinkDir(pinDir, ep.id), prog));
        try {
          assert.equal(l.programId, ids[prog], `${prog} of endpoint ${ep.id} runs the shared program`);
          assert.equal(l.info().ifindex, ep.hostIfindex);
        } finally {
          l.close();
        }
      }
    }
    // And they are pinned, once.
    const builds = readdirSync(endpointProgramsDir(pinDir));
    assert.equal(builds.length, 1);
    assert.deepEqual(readdirSync(join(endpointProgramsDir(pinDir), builds[0] as string)).sort(), ['from_endpoint', 'to_endpoint']);
    assert.equal(dp.programDir, join(endpointProgramsDir(pinDir), builds[0] as string));
  });

  test('the node has no bridge and no address on any endpoint veth', (t) => {
    if (skipUnlessRoot(t)) return;
    assert.deepEqual(JSON.parse(node.exec(['ip', '-j', 'link', 'show', 'type', 'bridge'])), []);
    const addrs = JSON.parse(node.exec(['ip', '-j', 'addr', 'show'])) as { ifname: string; addr_info: unknown[] }[];
    for (const ep of eps) {
      const dev = addrs.find((a) => a.ifname === ep.hostIf);
      assert.ok(dev, `${ep.hostIf} exists`);
      assert.deepEqual(dev.addr_info, [], `${ep.hostIf} has no address`);
    }
  });

  test('ping over IPv4 and IPv6 between every pair of endpoints', async (t) => {
    if (skipUnlessRoot(t) || requireTools(t, 'ip', 'ping')) return;
    for (const a of eps) {
      for (const b of eps) {
        if (a === b) continue;
        assert.equal(await ping(a.ns, b.ipv4, 2), 2, `ping ${a.ipv4} → ${b.ipv4}`);
        assert.equal(await ping(a.ns, b.ipv6, 2), 2, `ping ${a.ipv6} → ${b.ipv6}`);
      }
    }
    // The endpoints learnt the router's MAC = their host-side veth's MAC: answered by eBPF.
    for (const ep of eps) {
      const n4 = JSON.parse(ep.ns.exec(['ip', '-j', 'neigh', 'show', ROUTER4, 'dev', 'eth0'])) as { lladdr?: string }[];
      const n6 = JSON.parse(ep.ns.exec(['ip', '-j', '-6', 'neigh', 'show', ROUTER6, 'dev', 'eth0'])) as { lladdr?: string; router?: boolean }[];
      assert.equal(n4[0]?.lladdr, ep.hostMac, `ARP entry of the router in endpoint ${ep.id}`);
      assert.equal(n6[0]?.lladdr, ep.hostMac, `neighbor entry of the router in endpoint ${ep.id}`);
    }
  });

  test('TCP and UDP over IPv4 and IPv6 between every pair of endpoints', async (t) => {
    if (skipUnlessRoot(t)) return;
    let port = 7300;
    for (let i = 0; i < eps.length; i++) {
      for (let j = i + 1; j < eps.length; j++) {
        const a = eps[i] as Endpoint;
        const b = eps[j] as Endpoint;
        for (const [ca, sb, addr] of [[a, b, b.ipv4], [b, a, a.ipv6]] as const) {
          assert.equal(await tcpExchange(ca.ns, sb.ns, addr, port++, 100_000), 100_000, `TCP ${ca.id} → ${addr}`);
          assert.equal(await udpExchange(ca.ns, sb.ns, addr, port++, 3), 3, `UDP ${ca.id} → ${addr}`);
        }
        assert.equal(await tcpExchange(a.ns, b.ns, b.ipv6, port++, 20_000), 20_000, `TCP ${a.id} → ${b.ipv6}`);
        assert.equal(await udpExchange(b.ns, a.ns, a.ipv4, port++, 3), 3, `UDP ${b.id} → ${a.ipv4}`);
      }
    }
  });

  test('flow events: every pair seen forwarded endpoint to endpoint, with the right IDs', (t) => {
    if (skipUnlessRoot(t)) return;
    const all = collect();
    const fwd = all.filter((e) => e.type === FLOW_EVENT_TRACE && e.obsPoint === OBS_TO_ENDPOINT && e.verdict === VERDICT_FORWARDED && e.endpointId === e.srcEndpoint);
    const byId = new Map(eps.map((e) => [e.id, e]));
    for (const e of fwd) {
      const src = byId.get(e.srcEndpoint);
      const dst = byId.get(e.dstEndpoint);
      assert.ok(src && dst, `event between known endpoints: ${e.srcEndpoint} → ${e.dstEndpoint}`);
      assert.ok(e.srcIp === src.ipv4 || e.srcIp === src.ipv6, `source ${e.srcIp} belongs to endpoint ${src.id}`);
      assert.ok(e.dstIp === dst.ipv4 || e.dstIp === dst.ipv6, `destination ${e.dstIp} belongs to endpoint ${dst.id}`);
      assert.deepEqual([e.srcIdentity, e.dstIdentity], [1000 + src.id, 1000 + dst.id], 'the endpoints\' identities');
    }
    for (const a of eps) {
      for (const b of eps) {
        if (a === b) continue;
        for (const [v, proto] of [[4, 1], [6, 58], [4, 6], [6, 6], [4, 17], [6, 17]] as const) {
          const hit = fwd.some((e) => e.srcEndpoint === a.id && e.dstEndpoint === b.id && e.ipVersion === v && e.ipProto === proto);
          assert.ok(hit, `a forwarded IPv${v} protocol ${proto} event ${a.id} → ${b.id}`);
        }
      }
    }
    // TCP opens are always traced: a SYN each way per connection.
    assert.ok(fwd.some((e) => e.ipProto === 6 && e.tcpFlagNames.includes('SYN') && !e.tcpFlagNames.includes('ACK')));
    assert.ok(fwd.some((e) => e.ipProto === 6 && e.tcpFlagNames.includes('SYN') && e.tcpFlagNames.includes('ACK')));
    assert.ok(!all.some((e) => e.type === FLOW_EVENT_DROP), `no drops: ${JSON.stringify(all.filter((e) => e.type === FLOW_EVENT_DROP).map((e) => [e.dropReasonName, e.srcIp, e.dstIp, e.icmpType]))}`);
    // Monitor aggregation: far fewer events than packets (100 kB TCP exchanges alone are hundreds of segments).
    const metrics = metricsMap(pinDir);
    try {
      const forwarded = metrics.lookupSum({ reason: REASON_FORWARDED, direction: METRIC_EGRESS })?.packets ?? 0;
      assert.ok(forwarded > fwd.length, `forwarded packets ${forwarded} > forwarded events ${fwd.length}`);
    } finally {
      metrics.close();
    }
  });

  test('a spoofed source address is dropped, reported (INVALID_SOURCE_IP) and counted', async (t) => {
    if (skipUnlessRoot(t)) return;
    const [a, b] = eps as [Endpoint, Endpoint];
    const metrics = metricsMap(pinDir);
    cleanup.add(() => metrics.close(), 'metrics map');
    const key = { reason: INVALID_SOURCE_IP, direction: METRIC_EGRESS };
    const before = metrics.lookupSum(key)?.packets ?? 0;
    // Fresh router neighbor entries first: the kernel would otherwise refresh
    // them with ARP/NS from the spoofed source, which is dropped too.
    assert.equal(await ping(a.ns, b.ipv4, 1), 1);
    assert.equal(await ping(a.ns, b.ipv6, 1), 1);
    collect();
    events.length = 0;
    // A second address inside endpoint 1 that the node never gave it.
    a.ns.exec(['ip', 'addr', 'add', '10.199.200.99/32', 'dev', 'eth0']);
    a.ns.exec(['ip', '-6', 'addr', 'add', 'fd99:200::99/128', 'dev', 'eth0', 'nodad']);
    try {
      for (const [src, dst] of [['10.199.200.99', b.ipv4], ['fd99:200::99', b.ipv6]] as const) {
        let out = '';
        try {
          out = a.ns.exec(['ping', '-n', '-c', '3', '-W', '1', '-i', '0.2', '-I', src, dst], { timeoutMs: 10_000 });
        } catch (err) {
          out = String((err as { stdout?: string }).stdout ?? '');
        }
        assert.match(out, / 0 received/, `spoofed ping from ${src} gets no reply`);
      }
    } finally {
      a.ns.exec(['ip', 'addr', 'del', '10.199.200.99/32', 'dev', 'eth0']);
      a.ns.exec(['ip', '-6', 'addr', 'del', 'fd99:200::99/128', 'dev', 'eth0']);
    }
    const drops = collect().filter((e) => e.type === FLOW_EVENT_DROP);
    for (const [src, dst] of [['10.199.200.99', b.ipv4], ['fd99:200::99', b.ipv6]] as const) {
      const mine = drops.filter((e) => e.srcIp === src && e.dstIp === dst);
      assert.ok(mine.length >= 3, `${mine.length} drop events for ${src} → ${dst}`);
      for (const e of mine) {
        assert.deepEqual(
          [e.dropReasonName, e.verdictName, e.obsPointName, e.endpointId, e.srcEndpoint],
          ['INVALID_SOURCE_IP', 'DROPPED', 'FROM_ENDPOINT', a.id, a.id],
        );
      }
    }
    const counted = (metrics.lookupSum(key)?.packets ?? 0) - before;
    assert.ok(counted >= 6, `metrics counted ${counted} spoofed packets`);
    // And legitimate traffic still flows.
    assert.equal(await ping(a.ns, b.ipv4, 1), 1);
  });

  test('a veth whose lxc_config entry is gone drops everything (NO_CONFIGURATION_...); attaching again restores it', async (t) => {
    if (skipUnlessRoot(t)) return;
    const c = eps[2] as Endpoint;
    const a = eps[0] as Endpoint;
    collect();
    events.length = 0;
    assert.ok(dp.config.delete(c.hostIfindex));
    assert.equal(endpointAttached(dp, endpointConfig(c)), false, 'not attached as it should be without its entry');
    assert.equal(await ping(c.ns, a.ipv4, 1), 0, 'nothing leaves the endpoint');
    const drops = collect().filter((e) => e.type === FLOW_EVENT_DROP && e.ifindex === c.hostIfindex);
    assert.ok(drops.length > 0, 'drops reported');
    for (const e of drops) assert.deepEqual([e.dropReason, e.endpointId], [NO_CONFIG, 0]);
    const att = inNetns(node.path, () => attachEndpoint(dp, endpointConfig(c)));
    att.ingress.close();
    att.egress.close();
    assert.ok(endpointAttached(dp, endpointConfig(c)));
    assert.equal(await ping(c.ns, a.ipv4, 1), 1);
  });

  test('an agent restart reuses the pinned programs (the same ids); attaching again keeps the same links', (t) => {
    if (skipUnlessRoot(t)) return;
    const ids = [dp.program('from_endpoint').info().id, dp.program('to_endpoint').info().id];
    const a = eps[0] as Endpoint;
    const pin = join(endpointLinkDir(pinDir, a.id), 'from_endpoint');
    const linkId = (): number => {
      const l = Link.openPinned(pin);
      try {
        return l.id;
      } finally {
        l.close();
      }
    };
    const firstLink = linkId();
    // Every handle goes, as when the agent exits.
    dp.close();
    dp = loadEndpointDatapath({ pinDir, routerIpv4: ROUTER4, routerIpv6: ROUTER6 });
    assert.equal(dp.reused, true, 'found pinned and reused, not loaded');
    assert.deepEqual([dp.program('from_endpoint').info().id, dp.program('to_endpoint').info().id], ids, 'the same programs');
    for (const ep of eps) assert.ok(endpointAttached(dp, endpointConfig(ep)), `endpoint ${ep.id} needs no new attach`);
    const same = inNetns(node.path, () => attachEndpoint(dp, endpointConfig(a)));
    same.ingress.close();
    same.egress.close();
    assert.equal(linkId(), firstLink, 'the same programs: the same link');
  });

  test('new programs (another build) replace the old ones without a gap; detach stops delivery and removes the entry', async (t) => {
    if (skipUnlessRoot(t)) return;
    const [a, b] = eps as [Endpoint, Endpoint];
    const pin = join(endpointLinkDir(pinDir, a.id), 'from_endpoint');
    const pinnedLink = (): { id: number; programId: number; ifindex: number | undefined } => {
      const l = Link.openPinned(pin);
      try {
        return { id: l.id, programId: l.programId, ifindex: l.info().ifindex };
      } finally {
        l.close();
      }
    };
    const first = pinnedLink();
    const oldDir = dp.programDir;

    // Other load-time constants (as after an upgrade): a new build, loaded and pinned; the old build's pins go.
    const fresh = loadEndpointDatapath({ pinDir, routerIpv4: ROUTER4, routerIpv6: ROUTER6, traceIntervalNs: 2_000_000_000 });
    cleanup.add(() => fresh.close(), 'fresh endpoint datapath');
    assert.equal(fresh.reused, false);
    assert.notEqual(fresh.programDir, oldDir);
    assert.ok(!existsSync(oldDir), 'the old build is unpinned');
    assert.deepEqual(readdirSync(endpointProgramsDir(pinDir)), [fresh.programDir.split('/').at(-1)]);
    assert.notEqual(fresh.program('from_endpoint').info().id, first.programId);
    assert.equal(endpointAttached(fresh, endpointConfig(a)), false, 'runs the old programs: needs a new attach');
    // The old programs still run where they are attached.
    assert.equal(await ping(b.ns, a.ipv4, 1), 1);

    const pinger = ping(a.ns, b.ipv4, 10);
    await new Promise((r) => setTimeout(r, 500));
    const replaced = inNetns(node.path, () => attachEndpoint(fresh, endpointConfig(a)));
    replaced.ingress.close();
    replaced.egress.close();
    assert.equal(await pinger, 10, 'no ping lost while the programs were replaced');
    const now = pinnedLink();
    assert.notEqual(now.id, first.id, 'a new link is pinned');
    assert.equal(now.programId, fresh.program('from_endpoint').info().id);
    assert.equal(now.ifindex, a.hostIfindex);
    assert.ok(endpointAttached(fresh, endpointConfig(a)));
    assert.equal(await ping(a.ns, b.ipv6, 2), 2);

    assert.equal(detachEndpointPrograms(pinDir, a.id), 2);
    assert.equal(fresh.config.lookup(a.hostIfindex), undefined, 'the lxc_config entry is gone');
    assert.equal(detachEndpointPrograms(pinDir, a.id), 0, 'detaching again is a no-op');
    assert.equal(await ping(a.ns, b.ipv4, 1), 0, 'without from_endpoint nothing delivers the endpoint\'s packets');
    assert.ok(fresh.config.lookup(b.hostIfindex), 'other endpoints keep theirs');
  });
});
