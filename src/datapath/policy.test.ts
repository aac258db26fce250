/**
 * Conntrack and identity-based policy in the endpoint datapath
 * (bpf/lxc.bpf.c, bpf/lib/ct.h, bpf/lib/policy_verdict.h, bpf/lib/identity.h):
 * crafted frames through BPF_PROG_TEST_RUN on the devices of a throw-away
 * namespace (so skb->ifindex picks each endpoint's `lxc_config` entry), with
 * the `policy`, `ipcache`, `policy_state` and `ct` maps written and read
 * directly. Two local endpoints A and B; every test starts from empty
 * policy, ipcache and conntrack maps and endpoints without policy flags.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIPv4, parseIPv6 } from '../bpf/codec.js';
import type { BpfMap, PerCpuMap } from '../bpf/map.js';
import { isRoot, skipUnlessRoot } from '../../test/helpers/root.js';
import { Cleanup } from '../../test/helpers/netns.js';
import { metricsMap, type DecodedFlowEvent } from './lxc.js';
import { policyExactMap, writePolicyRevision } from './policy-maps.js';
import type { IpcacheValue } from './codecs/ipcache.js';
import type { PolicyKey, PolicyState, PolicyValue } from './codecs/policy.js';
import { CT_FLAGS, type CtEntry, type CtKey } from './codecs/conntrack.js';
import { METRIC_EGRESS, type MetricsKey, type MetricsValue } from './codecs/metrics.js';
import {
  FLOW_EVENT_DROP, FLOW_EVENT_POLICY_VERDICT, FLOW_EVENT_TRACE, FLOW_FLAGS, OBS_FROM_ENDPOINT, OBS_TO_ENDPOINT, OBS_TO_STACK,
  VERDICT_DROPPED, VERDICT_FORWARDED,
} from './codecs/flow-event.js';
import { dropReasonCode } from './drop-reasons.js';
import {
  ACK, FIN, RST, SYN, TC_ACT_OK, TC_ACT_REDIRECT, checksum, eth, fragmentDatagram, icmpEcho, ipv4, ipv6, tcp, udp,
} from './test-frames.js';
import { DatapathHarness, assertDropped, only, type Run, type TestEndpoint } from './test-harness.js';

const POLICY_DENIED = dropReasonCode('POLICY_DENIED');
const POLICY_DENY = dropReasonCode('POLICY_DENY');
const CT_TRUNCATED = dropReasonCode('CT_TRUNCATED_OR_INVALID_HEADER');
const CT_CANNOT_CREATE = dropReasonCode('CT_CANNOT_CREATE_ENTRY_FROM_PACKET');
const FRAG_NOT_FOUND = dropReasonCode('FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND');

/** ENDPOINT_F_POLICY_* / LXC_CONFIG_F_POLICY_*. */
const F_INGRESS = 0x1;
const F_EGRESS = 0x2;
/** POLICY_MATCH_*. */
const MATCH_L3_ONLY = 1;
const MATCH_L3_L4 = 2;
const MATCH_L4_ONLY = 3;
const IDENTITY_WORLD = 2;
const TCP = 6;
const UDP = 17;
const ICMP = 1;
const ICMPV6 = 58;

const { REPLY_KNOWN, IS_REPLY, INGRESS, EGRESS } = FLOW_FLAGS;

type Ep = TestEndpoint;

const A: Ep = { id: 21, ipv4: '10.199.210.21', ipv6: 'fd99:210::21', mac: '02:00:00:00:00:21', hostMac: '02:00:00:00:01:21', identity: 3021, ifindex: 0 };
const B: Ep = { id: 22, ipv4: '10.199.210.22', ipv6: 'fd99:210::22', mac: '02:00:00:00:00:22', hostMac: '02:00:00:00:01:22', identity: 3022, ifindex: 0 };

/** A frame leaving endpoint `ep` (into from_endpoint on its device). */
const out4 = (ep: Ep, dst: string, proto: number, l4: Buffer): Buffer => eth(ep.hostMac, ep.mac, 0x0800, ipv4(ep.ipv4, dst, proto, l4));
const out6 = (ep: Ep, dst: string, proto: number, l4: Buffer): Buffer => eth(ep.hostMac, ep.mac, 0x86dd, ipv6(ep.ipv6, dst, proto, l4));
/** A frame the node's stack sends to endpoint `ep` (into to_endpoint on its device). */
const in4 = (ep: Ep, src: string, proto: number, l4: Buffer): Buffer => eth(ep.mac, ep.hostMac, 0x0800, ipv4(src, ep.ipv4, proto, l4));

/** A conntrack key as the datapath writes it (original direction). */
function ctKeyOf(src: string, dst: string, proto: number, sport: number, dport: number): CtKey {
  const v6 = src.includes(':');
  const saddr = new Uint8Array(16);
  const daddr = new Uint8Array(16);
  saddr.set(v6 ? parseIPv6(src) : parseIPv4(src));
  daddr.set(v6 ? parseIPv6(dst) : parseIPv4(dst));
  return { saddr, daddr, sport, dport, proto, family: v6 ? 10 : 2 };
}

const cleanup = new Cleanup();
after(() => cleanup.run());

describe('conntrack and policy in the endpoint programs (BPF_PROG_TEST_RUN)', () => {
  let h: DatapathHarness;
  let pinDir: string;
  let policy: BpfMap<PolicyKey, PolicyValue>;
  let ipcache: BpfMap<string, IpcacheValue>;
  let state: BpfMap<number, PolicyState>;
  let ct: BpfMap<CtKey, CtEntry>;
  let metrics: PerCpuMap<MetricsKey, MetricsValue>;

  const setFlags = (ep: Ep, flags: number): void => h.setFlags(ep, flags);

  /** Writes one policy entry of endpoint `ep`. */
  function rule(ep: Ep, direction: 'ingress' | 'egress', identity: number, proto: number, port: number, portPrefixLen: number,
    value: { cookie: number; deny?: boolean; matchType?: number }): PolicyKey {
    const key: PolicyKey = { endpointId: ep.id, direction, identity, proto, port, portPrefixLen };
    policy.update(key, { cookie: value.cookie, deny: value.deny ? 1 : 0, matchType: value.matchType ?? MATCH_L3_L4 });
    return key;
  }

  const setRevision = (revision: number): void => writePolicyRevision(state, revision);

  /** Runs a frame leaving `ep` through from_endpoint on its device. */
  const from = (ep: Ep, frame: Buffer): Run => h.from(ep, frame);
  /** Runs a frame for `ep` through to_endpoint on its device. */
  const to = (ep: Ep, frame: Buffer): Run => h.to(ep, frame);

  const ofType = (events: DecodedFlowEvent[], type: number): DecodedFlowEvent[] => events.filter((e) => e.type === type);

  before(() => {
    if (!isRoot) return;
    h = DatapathHarness.open(cleanup, 'wg-pol-run', [A, B]);
    ({ pinDir, policy, ipcache, state, ct } = h);
    metrics = metricsMap(pinDir);
    cleanup.add(() => metrics.close(), 'metrics map');
  });

  beforeEach(() => {
    if (!isRoot) return;
    h.reset();
    setFlags(A, 0);
    setFlags(B, 0);
  });

  test('without policy flags a TCP SYN to a local endpoint is allowed and tracked with the endpoints\' identities', (t) => {
    if (skipUnlessRoot(t)) return;
    // ipcache entries for the endpoints' own addresses that disagree: the
    // identities must come from lxc_config (source) and endpoints (destination).
    ipcache.update(`${A.ipv4}/32`, { identity: 9001, flags: 0 });
    ipcache.update(`${B.ipv4}/32`, { identity: 9002, flags: 0 });
    const frame = out4(A, B.ipv4, TCP, tcp(40000, 80, SYN));
    const r = from(A, frame);
    assert.equal(r.retval, TC_ACT_REDIRECT);
    assert.equal(ofType(r.events, FLOW_EVENT_POLICY_VERDICT).length, 0, 'no policy, no verdict event');
    const e = only(r.events, FLOW_EVENT_TRACE);
    assert.deepEqual(
      [e.srcIdentity, e.dstIdentity, e.flags, e.egressCookie, e.ingressCookie, e.srcEndpoint, e.dstEndpoint],
      [A.identity, B.identity, REPLY_KNOWN, 0, 0, A.id, B.id],
    );
    const entry = ct.lookup(ctKeyOf(A.ipv4, B.ipv4, TCP, 40000, 80));
    assert.ok(entry, 'a conntrack entry keyed by the SYN\'s tuple');
    assert.deepEqual(
      [entry.srcIdentity, entry.dstIdentity, entry.policyRevision, entry.egressCookie, entry.ingressCookie, entry.flags, entry.tcpFlagsFwd, entry.tcpFlagsRev],
      [A.identity, B.identity, 1, 0, 0, 0, SYN, 0],
    );
    assert.deepEqual([entry.packetsFwd, entry.bytesFwd, entry.packetsRev], [1, frame.length, 0]);
    const now = Number(process.hrtime.bigint());
    assert.ok(entry.expiresNs > now + 50e9 && entry.expiresNs <= now + 61e9, 'a SYN-only connection lives 60 s');
    assert.equal(ct.lookup(ctKeyOf(B.ipv4, A.ipv4, TCP, 80, 40000)), undefined, 'one entry per connection, in the original direction');
    assert.equal(ct.count(), 1);
  });

  test('egress policy without entries denies a new connection: POLICY_DENIED, direction egress, both endpoints named', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    const key = { reason: POLICY_DENIED, direction: METRIC_EGRESS };
    const before = metrics.lookupSum(key)?.packets ?? 0;
    const r = from(A, out4(A, B.ipv4, TCP, tcp(40001, 80, SYN)));
    const e = assertDropped(r, POLICY_DENIED, 'SYN under empty egress policy');
    assert.deepEqual(
      [e.flags, e.endpointId, e.srcEndpoint, e.dstEndpoint, e.obsPoint, e.srcIdentity, e.dstIdentity, e.egressCookie, e.matchType],
      [EGRESS, A.id, A.id, B.id, OBS_FROM_ENDPOINT, A.identity, B.identity, 0, 0],
    );
    const v = only(r.events, FLOW_EVENT_POLICY_VERDICT);
    assert.deepEqual([v.verdict, v.dropReason, v.flags & (INGRESS | EGRESS)], [VERDICT_DROPPED, POLICY_DENIED, EGRESS]);
    assert.equal(ct.count(), 0, 'a denied connection leaves no conntrack entry');
    assert.equal((metrics.lookupSum(key)?.packets ?? 0) - before, 1, 'counted under POLICY_DENIED');
    // The same SYN from B (no policy) to A passes: the flag is per endpoint.
    assert.equal(from(B, out4(B, A.ipv4, TCP, tcp(40001, 80, SYN))).retval, TC_ACT_REDIRECT);
  });

  test('an egress allow entry for (peer identity, TCP, 80/16) allows port 80 with a verdict naming it; port 81 and other peers are denied', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    rule(A, 'egress', B.identity, TCP, 80, 16, { cookie: 0x10001, matchType: MATCH_L3_L4 });
    const r = from(A, out4(A, B.ipv4, TCP, tcp(40002, 80, SYN)));
    assert.equal(r.retval, TC_ACT_REDIRECT);
    const v = only(r.events, FLOW_EVENT_POLICY_VERDICT);
    assert.deepEqual(
      [v.verdict, v.dropReason, v.egressCookie, v.ingressCookie, v.matchType, v.flags & (INGRESS | EGRESS), v.endpointId, v.srcEndpoint, v.dstEndpoint],
      [VERDICT_FORWARDED, 0, 0x10001, 0, MATCH_L3_L4, EGRESS, A.id, A.id, B.id],
    );
    const trace = only(r.events, FLOW_EVENT_TRACE);
    assert.deepEqual([trace.egressCookie, trace.matchType], [0x10001, MATCH_L3_L4]);
    assert.equal(ct.lookup(ctKeyOf(A.ipv4, B.ipv4, TCP, 40002, 80))?.egressCookie, 0x10001, 'the entry remembers the rule');

    assertDropped(from(A, out4(A, B.ipv4, TCP, tcp(40002, 81, SYN))), POLICY_DENIED, 'port 81');
    assertDropped(from(A, out4(A, B.ipv4, UDP, udp(40002, 80))), POLICY_DENIED, 'UDP to port 80');
    // Another peer (world) on the allowed port: the entry is for B's identity only.
    assertDropped(from(A, out4(A, '192.0.2.80', TCP, tcp(40002, 80, SYN))), POLICY_DENIED, 'world on port 80');
    // An entry for any peer (identity 0) is found by the second lookup.
    rule(A, 'egress', 0, TCP, 443, 16, { cookie: 0x10002, matchType: MATCH_L4_ONLY });
    const any = from(A, out4(A, '192.0.2.80', TCP, tcp(40002, 443, SYN)));
    assert.equal(any.retval, TC_ACT_OK, 'to the stack');
    assert.deepEqual([only(any.events, FLOW_EVENT_POLICY_VERDICT).egressCookie, only(any.events, FLOW_EVENT_POLICY_VERDICT).matchType], [0x10002, MATCH_L4_ONLY]);
  });

  test('single-port entries in the policy_exact hash decide first; the trie answers what the hash does not hold', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    const exact = policyExactMap(pinDir);
    try {
      exact.clear();
      // The agent never writes both for one peer (a covered allow becomes a deny); here they differ on purpose.
      exact.update({ endpointId: A.id, direction: 'egress', identity: B.identity, proto: TCP, port: 80, portPrefixLen: 16 }, { cookie: 0xa0001, deny: 0, matchType: MATCH_L3_L4 });
      rule(A, 'egress', B.identity, TCP, 0, 0, { cookie: 0xa0002, deny: true });
      const v = from(A, out4(A, B.ipv4, TCP, tcp(40100, 80, SYN)));
      assert.equal(v.retval, TC_ACT_REDIRECT, 'port 80: the exact entry allows');
      assert.equal(only(v.events, FLOW_EVENT_POLICY_VERDICT).egressCookie, 0xa0001);
      const d = assertDropped(from(A, out4(A, B.ipv4, TCP, tcp(40101, 81, SYN))), POLICY_DENY, 'port 81: the trie\'s deny');
      assert.equal(d.egressCookie, 0xa0002);
    } finally {
      exact.clear();
      exact.close();
    }
  });

  test('a port-range prefix (8080/13 = 8080-8087) allows 8080 and 8085 but not 8079 or 8088', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    rule(A, 'egress', B.identity, TCP, 8080, 13, { cookie: 0x10003 });
    let sport = 41000;
    for (const port of [8080, 8085, 8087]) {
      const r = from(A, out4(A, B.ipv4, TCP, tcp(sport++, port, SYN)));
      assert.equal(r.retval, TC_ACT_REDIRECT, `port ${port} is in the range`);
      assert.equal(only(r.events, FLOW_EVENT_POLICY_VERDICT).egressCookie, 0x10003);
    }
    for (const port of [8079, 8088]) assertDropped(from(A, out4(A, B.ipv4, TCP, tcp(sport++, port, SYN))), POLICY_DENIED, `port ${port}`);
  });

  test('a deny for any peer wins over an allow for the peer\'s identity (POLICY_DENY with the deny\'s cookie), and the other way round', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    rule(A, 'egress', B.identity, TCP, 80, 16, { cookie: 0x20001 });
    rule(A, 'egress', 0, TCP, 0, 0, { cookie: 0x20002, deny: true, matchType: MATCH_L4_ONLY });
    const r = from(A, out4(A, B.ipv4, TCP, tcp(42000, 80, SYN)));
    const e = assertDropped(r, POLICY_DENY, 'allow for B, deny TCP for anyone');
    assert.deepEqual([e.egressCookie, e.matchType, e.flags], [0x20002, MATCH_L4_ONLY, EGRESS]);
    const v = only(r.events, FLOW_EVENT_POLICY_VERDICT);
    assert.deepEqual([v.verdict, v.dropReason, v.egressCookie], [VERDICT_DROPPED, POLICY_DENY, 0x20002]);
    assert.equal(ct.count(), 0);

    // A deny for the peer's identity beats an allow for any peer.
    policy.clear();
    rule(A, 'egress', 0, TCP, 80, 16, { cookie: 0x20003 });
    rule(A, 'egress', B.identity, 0, 0, 0, { cookie: 0x20004, deny: true, matchType: MATCH_L3_ONLY });
    const e2 = assertDropped(from(A, out4(A, B.ipv4, TCP, tcp(42001, 80, SYN))), POLICY_DENY, 'deny B, allow anyone on 80');
    assert.deepEqual([e2.egressCookie, e2.matchType], [0x20004, MATCH_L3_ONLY]);
    // The allow for any peer still lets others through.
    assert.equal(from(A, out4(A, '192.0.2.1', TCP, tcp(42002, 80, SYN))).retval, TC_ACT_OK);
  });

  test('the ingress policy of a local destination is enforced in the source\'s from_endpoint', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(B, F_INGRESS);
    const r = from(A, out4(A, B.ipv4, TCP, tcp(43000, 80, SYN)));
    const e = assertDropped(r, POLICY_DENIED, 'B has ingress policy without entries');
    assert.deepEqual(
      [e.flags, e.endpointId, e.srcEndpoint, e.dstEndpoint, e.srcIdentity, e.dstIdentity],
      [INGRESS, B.id, A.id, B.id, A.identity, B.identity],
      'decided by B\'s ingress: reported as B\'s',
    );
    rule(B, 'ingress', A.identity, TCP, 80, 16, { cookie: 0x30001 });
    const ok = from(A, out4(A, B.ipv4, TCP, tcp(43001, 80, SYN)));
    assert.equal(ok.retval, TC_ACT_REDIRECT);
    const v = only(ok.events, FLOW_EVENT_POLICY_VERDICT);
    assert.deepEqual(
      [v.verdict, v.ingressCookie, v.egressCookie, v.matchType, v.flags & (INGRESS | EGRESS), v.endpointId],
      [VERDICT_FORWARDED, 0x30001, 0, MATCH_L3_L4, INGRESS, B.id],
    );
    assert.equal(ct.lookup(ctKeyOf(A.ipv4, B.ipv4, TCP, 43001, 80))?.ingressCookie, 0x30001);
    // With A's egress policy as well: both enforcement points decide, each with its verdict.
    setFlags(A, F_EGRESS);
    assertDropped(from(A, out4(A, B.ipv4, TCP, tcp(43003, 80, SYN))), POLICY_DENIED, 'A\'s egress allows nothing');
    rule(A, 'egress', B.identity, TCP, 0, 0, { cookie: 0x30002 });
    const both = from(A, out4(A, B.ipv4, TCP, tcp(43004, 80, SYN)));
    assert.equal(both.retval, TC_ACT_REDIRECT);
    assert.deepEqual(
      ofType(both.events, FLOW_EVENT_POLICY_VERDICT).map((x) => [x.flags & (INGRESS | EGRESS), x.endpointId, x.egressCookie, x.ingressCookie]),
      [[EGRESS, A.id, 0x30002, 0], [INGRESS, B.id, 0x30002, 0x30001]],
    );
    const entry = ct.lookup(ctKeyOf(A.ipv4, B.ipv4, TCP, 43004, 80));
    assert.deepEqual([entry?.egressCookie, entry?.ingressCookie], [0x30002, 0x30001]);
    // B's ingress entry is for A's identity: a source with another identity is still denied.
    ipcache.update('10.199.220.0/24', { identity: 16777300, flags: 0 });
    const other = to(B, in4(B, '10.199.220.9', TCP, tcp(43002, 80, SYN)));
    assert.equal(assertDropped(other, POLICY_DENIED, 'another source').srcIdentity, 16777300);
  });

  test('a reply passes on its conntrack entry although the reverse direction is denied by policy', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    setFlags(B, F_EGRESS); // and no entries: B may open nothing
    rule(A, 'egress', B.identity, TCP, 80, 16, { cookie: 0x40001 });
    assert.equal(from(A, out4(A, B.ipv4, TCP, tcp(44000, 80, SYN))).retval, TC_ACT_REDIRECT);
    const reply = from(B, out4(B, A.ipv4, TCP, tcp(80, 44000, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_REDIRECT, 'the SYN-ACK passes');
    assert.equal(ofType(reply.events, FLOW_EVENT_POLICY_VERDICT).length, 0, 'no policy decision on a reply');
    const e = only(reply.events, FLOW_EVENT_TRACE);
    assert.deepEqual(
      [e.flags, e.srcIdentity, e.dstIdentity, e.egressCookie, e.srcEndpoint, e.dstEndpoint],
      [REPLY_KNOWN | IS_REPLY, B.identity, A.identity, 0x40001, B.id, A.id],
    );
    const entry = ct.lookup(ctKeyOf(A.ipv4, B.ipv4, TCP, 44000, 80));
    assert.ok(entry);
    assert.deepEqual([entry.flags & CT_FLAGS.SEEN_REPLY, entry.tcpFlagsRev, entry.packetsRev, entry.packetsFwd], [CT_FLAGS.SEEN_REPLY, SYN | ACK, 1, 1]);
    const now = Number(process.hrtime.bigint());
    assert.ok(entry.expiresNs > now + 3600e9, 'established: the long TCP lifetime');
    // The original direction goes on, not as a reply.
    const ack = from(A, out4(A, B.ipv4, TCP, tcp(44000, 80, ACK)));
    assert.equal(ack.retval, TC_ACT_REDIRECT);
    assert.equal(ct.lookup(ctKeyOf(A.ipv4, B.ipv4, TCP, 44000, 80))?.packetsFwd, 2);
    // B opening a connection of its own is still denied.
    assertDropped(from(B, out4(B, A.ipv4, TCP, tcp(44001, 80, SYN))), POLICY_DENIED, 'B\'s own SYN');
  });

  test('TCP without SYN and without a conntrack entry is dropped (CT_CANNOT_CREATE_ENTRY_FROM_PACKET); a truncated L4 header is CT_TRUNCATED_OR_INVALID_HEADER', (t) => {
    if (skipUnlessRoot(t)) return;
    let sport = 45000;
    for (const [name, flags] of [['ACK', ACK], ['SYN-ACK', SYN | ACK], ['RST', RST], ['SYN-FIN', SYN | FIN], ['FIN-ACK', FIN | ACK]] as const) {
      const e = assertDropped(from(A, out4(A, B.ipv4, TCP, tcp(sport++, 80, flags))), CT_CANNOT_CREATE, name);
      assert.deepEqual([e.srcIdentity, e.dstIdentity, e.srcEndpoint, e.dstEndpoint], [A.identity, B.identity, A.id, B.id]);
    }
    assert.equal(assertDropped(to(A, in4(A, '192.0.2.7', TCP, tcp(80, sport++, ACK))), CT_CANNOT_CREATE, 'to_endpoint ACK').obsPoint, OBS_TO_ENDPOINT);
    assert.equal(ct.count(), 0, 'none of them made an entry');

    const short = tcp(sport, 80, SYN).subarray(0, 12);
    assertDropped(from(A, out4(A, B.ipv4, TCP, short)), CT_TRUNCATED, 'IPv4 TCP header cut at 12 bytes');
    assertDropped(from(A, out6(A, B.ipv6, TCP, short)), CT_TRUNCATED, 'IPv6 TCP header cut at 12 bytes');
    assertDropped(from(A, out4(A, B.ipv4, UDP, udp(sport, 53).subarray(0, 3))), CT_TRUNCATED, 'UDP header cut at 3 bytes');
    assert.equal(ct.count(), 0);
  });

  for (const first of ['the reply', 'the original'] as const) {
    test(`revocation: once the allow entry is gone and the revision bumped, the next packet (${first} direction) is dropped and the entry deleted`, (t) => {
      if (skipUnlessRoot(t)) return;
      setFlags(A, F_EGRESS);
      const allow = rule(A, 'egress', B.identity, TCP, 80, 16, { cookie: 0x50001 });
      const ctKey = ctKeyOf(A.ipv4, B.ipv4, TCP, 46000, 80);
      const fwd = (): { retval: number; events: DecodedFlowEvent[] } => from(A, out4(A, B.ipv4, TCP, tcp(46000, 80, ACK)));
      const rev = (): { retval: number; events: DecodedFlowEvent[] } => from(B, out4(B, A.ipv4, TCP, tcp(80, 46000, ACK)));
      assert.equal(from(A, out4(A, B.ipv4, TCP, tcp(46000, 80, SYN))).retval, TC_ACT_REDIRECT);
      assert.equal(from(B, out4(B, A.ipv4, TCP, tcp(80, 46000, SYN | ACK))).retval, TC_ACT_REDIRECT);
      assert.equal(fwd().retval, TC_ACT_REDIRECT);

      // The entry goes, the revision stays: established packets still pass on conntrack.
      assert.ok(policy.delete(allow));
      assert.equal(fwd().retval, TC_ACT_REDIRECT, 'established, same revision: not re-checked');
      assert.equal(rev().retval, TC_ACT_REDIRECT);
      assert.equal(ct.lookup(ctKey)?.policyRevision, 1);
      // A new connection is denied at once.
      assertDropped(from(A, out4(A, B.ipv4, TCP, tcp(46001, 80, SYN))), POLICY_DENIED, 'a new connection');

      setRevision(2);
      const r = first === 'the reply' ? rev() : fwd();
      const e = assertDropped(r, POLICY_DENIED, `the ${first} direction after the revision bump`);
      assert.equal(e.flags & EGRESS, EGRESS, 'decided by A\'s egress policy');
      assert.equal(ct.lookup(ctKey), undefined, 'the conntrack entry is deleted');
      // Without its entry the connection cannot go on either way.
      assertDropped(fwd(), CT_CANNOT_CREATE, 'forward after revocation');
      assertDropped(rev(), CT_CANNOT_CREATE, 'reply after revocation');
    });
  }

  test('a connection still allowed after a revision bump is re-checked, kept and marked with the new revision', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    rule(A, 'egress', B.identity, TCP, 80, 16, { cookie: 0x50002 });
    assert.equal(from(A, out4(A, B.ipv4, TCP, tcp(46100, 80, SYN))).retval, TC_ACT_REDIRECT);
    // The rule changes cookie (another policy now allows it) and the revision moves.
    rule(A, 'egress', B.identity, TCP, 80, 16, { cookie: 0x50003 });
    setRevision(7);
    assert.equal(from(B, out4(B, A.ipv4, TCP, tcp(80, 46100, SYN | ACK))).retval, TC_ACT_REDIRECT);
    const entry = ct.lookup(ctKeyOf(A.ipv4, B.ipv4, TCP, 46100, 80));
    assert.ok(entry);
    assert.deepEqual([entry.policyRevision, entry.egressCookie, entry.srcIdentity, entry.dstIdentity], [7, 0x50003, A.identity, B.identity]);
  });

  test('an expired conntrack entry counts as absent: its packets are new again', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    rule(A, 'egress', B.identity, TCP, 80, 16, { cookie: 0x50004 });
    const key = ctKeyOf(A.ipv4, B.ipv4, TCP, 46200, 80);
    assert.equal(from(A, out4(A, B.ipv4, TCP, tcp(46200, 80, SYN))).retval, TC_ACT_REDIRECT);
    assert.equal(from(B, out4(B, A.ipv4, TCP, tcp(80, 46200, SYN | ACK))).retval, TC_ACT_REDIRECT);
    const entry = ct.lookup(key);
    assert.ok(entry);
    ct.update(key, { ...entry, expiresNs: Number(process.hrtime.bigint()) - 1e9 });
    assertDropped(from(A, out4(A, B.ipv4, TCP, tcp(46200, 80, ACK))), CT_CANNOT_CREATE, 'an ACK on an expired entry');
    assertDropped(from(B, out4(B, A.ipv4, TCP, tcp(80, 46200, ACK))), CT_CANNOT_CREATE, 'a reply on an expired entry');
    // A SYN opens it afresh (policy decided again).
    assert.equal(from(A, out4(A, B.ipv4, TCP, tcp(46200, 80, SYN))).retval, TC_ACT_REDIRECT);
    assert.deepEqual([ct.lookup(key)?.packetsFwd, ct.lookup(key)?.flags], [1, 0]);
  });

  test('TCP close: RST, or FIN both ways, cuts the entry\'s lifetime to 10 s', (t) => {
    if (skipUnlessRoot(t)) return;
    const open = (sport: number): CtKey => {
      assert.equal(from(A, out4(A, B.ipv4, TCP, tcp(sport, 80, SYN))).retval, TC_ACT_REDIRECT);
      assert.equal(from(B, out4(B, A.ipv4, TCP, tcp(80, sport, SYN | ACK))).retval, TC_ACT_REDIRECT);
      return ctKeyOf(A.ipv4, B.ipv4, TCP, sport, 80);
    };
    const lifetime = (key: CtKey): number => ((ct.lookup(key)?.expiresNs ?? 0) - Number(process.hrtime.bigint())) / 1e9;
    const rst = open(46300);
    assert.ok(lifetime(rst) > 3600);
    assert.equal(from(B, out4(B, A.ipv4, TCP, tcp(80, 46300, RST | ACK))).retval, TC_ACT_REDIRECT);
    assert.ok(lifetime(rst) > 8 && lifetime(rst) <= 10, `after RST: ${lifetime(rst)} s`);
    assert.equal((ct.lookup(rst)?.flags ?? 0) & CT_FLAGS.RST, CT_FLAGS.RST);
    const fin = open(46301);
    assert.equal(from(A, out4(A, B.ipv4, TCP, tcp(46301, 80, FIN | ACK))).retval, TC_ACT_REDIRECT);
    assert.ok(lifetime(fin) > 3600, 'FIN one way: still open');
    assert.equal(from(B, out4(B, A.ipv4, TCP, tcp(80, 46301, FIN | ACK))).retval, TC_ACT_REDIRECT);
    assert.ok(lifetime(fin) > 8 && lifetime(fin) <= 10, `after FIN both ways: ${lifetime(fin)} s`);
    assert.equal((ct.lookup(fin)?.flags ?? 0) & (CT_FLAGS.TX_FIN | CT_FLAGS.RX_FIN), CT_FLAGS.TX_FIN | CT_FLAGS.RX_FIN);
  });

  test('ipcache: a non-endpoint address gets the identity of its longest prefix, world on a miss', (t) => {
    if (skipUnlessRoot(t)) return;
    ipcache.update('10.199.0.0/16', { identity: 16777217, flags: 0 });
    ipcache.update('10.199.211.0/24', { identity: 16777218, flags: 0 });
    ipcache.update('fd99:211::/64', { identity: 16777219, flags: 0 });
    let sport = 47000;
    for (const [dst, identity] of [['10.199.211.5', 16777218], ['10.199.212.5', 16777217], ['192.0.2.5', IDENTITY_WORLD]] as const) {
      const r = from(A, out4(A, dst, TCP, tcp(sport, 443, SYN)));
      assert.equal(r.retval, TC_ACT_OK, `${dst}: to the stack`);
      assert.equal(only(r.events, FLOW_EVENT_TRACE).dstIdentity, identity, `${dst}: event`);
      assert.equal(ct.lookup(ctKeyOf(A.ipv4, dst, TCP, sport, 443))?.dstIdentity, identity, `${dst}: conntrack entry`);
      sport++;
    }
    const r6 = from(A, out6(A, 'fd99:211::5', TCP, tcp(sport, 443, SYN)));
    assert.equal(r6.retval, TC_ACT_OK);
    assert.equal(ct.lookup(ctKeyOf(A.ipv6, 'fd99:211::5', TCP, sport, 443))?.dstIdentity, 16777219);
    assert.equal(ct.lookup(ctKeyOf(A.ipv6, 'fd99:212::5', TCP, sport, 443)), undefined);
    assert.equal(only(from(A, out6(A, 'fd99:212::5', TCP, tcp(sport, 443, SYN))).events, FLOW_EVENT_TRACE).dstIdentity, IDENTITY_WORLD);

    // The identity is what policy sees: an allow for the /24's identity only.
    setFlags(A, F_EGRESS);
    rule(A, 'egress', 16777218, TCP, 443, 16, { cookie: 0x60001 });
    assert.equal(from(A, out4(A, '10.199.211.6', TCP, tcp(47100, 443, SYN))).retval, TC_ACT_OK);
    assert.equal(assertDropped(from(A, out4(A, '10.199.212.6', TCP, tcp(47101, 443, SYN))), POLICY_DENIED, 'the /16 only').dstIdentity, 16777217);
  });

  test('ICMP echo is tracked by its identifier: the reply passes, another identifier or a request the other way is policy-checked', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    setFlags(B, F_EGRESS);
    // Echo request: type 8, any code (the port is type << 8 | code).
    rule(A, 'egress', B.identity, ICMP, 8 << 8, 8, { cookie: 0x70001 });
    const req = from(A, out4(A, B.ipv4, ICMP, icmpEcho(8, 0x1234)));
    assert.equal(req.retval, TC_ACT_REDIRECT);
    assert.equal(only(req.events, FLOW_EVENT_POLICY_VERDICT).egressCookie, 0x70001);
    const entry = ct.lookup(ctKeyOf(A.ipv4, B.ipv4, ICMP, 0x1234, 0x1234));
    assert.ok(entry, 'keyed by the identifier');
    assert.equal(entry.egressCookie, 0x70001);
    const reply = from(B, out4(B, A.ipv4, ICMP, icmpEcho(0, 0x1234)));
    assert.equal(reply.retval, TC_ACT_REDIRECT, 'the echo reply passes');
    assert.equal(only(reply.events, FLOW_EVENT_TRACE).flags, REPLY_KNOWN | IS_REPLY);
    assert.equal(ct.lookup(ctKeyOf(A.ipv4, B.ipv4, ICMP, 0x1234, 0x1234))?.packetsRev, 1);
    assertDropped(from(B, out4(B, A.ipv4, ICMP, icmpEcho(0, 0x4321))), POLICY_DENIED, 'an echo reply of another identifier');
    // B's own echo request with A's identifier is no reply of A's ping.
    assertDropped(from(B, out4(B, A.ipv4, ICMP, icmpEcho(8, 0x1234))), POLICY_DENIED, 'B\'s echo request with the same identifier');
  });

  test('UDP is tracked: the reply passes, a new flow from the other side is policy-checked', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    setFlags(B, F_EGRESS);
    rule(A, 'egress', B.identity, UDP, 53, 16, { cookie: 0x80001 });
    const q = from(A, out4(A, B.ipv4, UDP, udp(5353, 53)));
    assert.equal(q.retval, TC_ACT_REDIRECT);
    const entry = ct.lookup(ctKeyOf(A.ipv4, B.ipv4, UDP, 5353, 53));
    assert.ok(entry);
    const now = Number(process.hrtime.bigint());
    assert.ok(entry.expiresNs > now + 50e9 && entry.expiresNs <= now + 61e9, 'UDP lives 60 s');
    const a = from(B, out4(B, A.ipv4, UDP, udp(53, 5353)));
    assert.equal(a.retval, TC_ACT_REDIRECT, 'the answer passes');
    assert.equal(only(a.events, FLOW_EVENT_TRACE).flags, REPLY_KNOWN | IS_REPLY);
    assert.equal(ct.lookup(ctKeyOf(A.ipv4, B.ipv4, UDP, 5353, 53))?.flags, CT_FLAGS.SEEN_REPLY);
    assertDropped(from(B, out4(B, A.ipv4, UDP, udp(53, 5354))), POLICY_DENIED, 'another port pair from B');
    assertDropped(from(B, out4(B, A.ipv4, UDP, udp(5353, 53))), POLICY_DENIED, 'the same ports the other way round');
  });

  test('fragments: a datagram\'s later fragments get its first fragment\'s ports, so they meet the verdict and the conntrack entry of the head (IPv4 and IPv6); a tail without its head is FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    rule(A, 'egress', B.identity, UDP, 5000, 16, { cookie: 0x90001 });
    const datagram = (sport: number, dport: number): Buffer => udp(sport, dport, Buffer.alloc(3000, 0x61));
    for (const [v, src, dst, type] of [[4, A.ipv4, B.ipv4, 0x0800], [6, A.ipv6, B.ipv6, 0x86dd]] as const) {
      const frames = (sport: number, dport: number, id: number): Buffer[] =>
        fragmentDatagram(src, dst, UDP, datagram(sport, dport), id, 1400).map((p) => eth(A.hostMac, A.mac, type, p));
      const allowed = frames(45000, 5000, 0x1234);
      assert.equal(allowed.length, 3);
      const results = allowed.map((f) => from(A, f));
      assert.deepEqual(results.map((r) => r.retval), [TC_ACT_REDIRECT, TC_ACT_REDIRECT, TC_ACT_REDIRECT], `IPv${v}: every fragment to the allowed port passes`);
      const entry = ct.lookup(ctKeyOf(src, dst, UDP, 45000, 5000));
      assert.equal(entry?.packetsFwd, 3, `IPv${v}: the tail counts on the head's conntrack entry`);
      const traced = results.flatMap((r) => ofType(r.events, FLOW_EVENT_TRACE));
      assert.ok(traced.every((e) => e.srcPort === 45000 && e.dstPort === 5000), `IPv${v}: the tail's events carry the ports`);

      // The head to a denied port is dropped, and so is its tail (with the same reason, not as an unknown packet).
      const denied = frames(45001, 5001, 0x1235).map((f) => from(A, f));
      for (const r of denied) assertDropped(r, POLICY_DENIED, `IPv${v}: a fragment to port 5001`);
      assert.ok(denied.every((r) => only(r.events, FLOW_EVENT_DROP).dstPort === 5001));

      // A tail whose head never passed: dropped with its own reason.
      const [, ...tail] = frames(45002, 5000, 0x1236);
      for (const f of tail) assertDropped(from(A, f), FRAG_NOT_FOUND, `IPv${v}: a tail without its head`);
      // Another datagram's identification, same ends: not the head's ports either.
      assertDropped(from(A, frames(45000, 5000, 0x1299)[1] as Buffer), FRAG_NOT_FOUND, `IPv${v}: another identification`);
    }
  });

  test('an ICMP error quoting a tracked connection passes as related (port unreachable, packet too big); one quoting nothing known meets policy', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    setFlags(B, F_EGRESS);
    rule(A, 'egress', B.identity, UDP, 53, 16, { cookie: 0x90001 });
    assert.equal(from(A, out4(A, B.ipv4, UDP, udp(5353, 53))).retval, TC_ACT_REDIRECT);
    // B's stack answers "port unreachable", quoting A's datagram (IP header + the first 8 bytes of UDP).
    const quote = (sport: number): Buffer => ipv4(A.ipv4, B.ipv4, UDP, udp(sport, 53)).subarray(0, 28);
    const unreachable = (sport: number): Buffer => {
      const m = Buffer.concat([Buffer.from([3, 3, 0, 0, 0, 0, 0, 0]), quote(sport)]);
      m.writeUInt16BE(checksum(m), 2);
      return m;
    };
    const related = from(B, out4(B, A.ipv4, ICMP, unreachable(5353)));
    assert.equal(related.retval, TC_ACT_REDIRECT, 'the error about the tracked flow passes although B\'s egress allows nothing');
    assertDropped(from(B, out4(B, A.ipv4, ICMP, unreachable(4444))), POLICY_DENIED, 'an error quoting a flow that does not exist');
    // IPv6 "packet too big" about a tracked TCP connection (path-MTU discovery).
    rule(A, 'egress', B.identity, TCP, 443, 16, { cookie: 0x90002 });
    assert.equal(from(A, out6(A, B.ipv6, TCP, tcp(40000, 443, SYN))).retval, TC_ACT_REDIRECT);
    const inner = ipv6(A.ipv6, B.ipv6, TCP, tcp(40000, 443, ACK)).subarray(0, 48);
    const ptb = Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0x05, 0x00]), inner]);
    assert.equal(from(B, out6(B, A.ipv6, ICMPV6, ptb)).retval, TC_ACT_REDIRECT, 'packet too big about the tracked connection passes');
  });

  test('to_endpoint: traffic from a non-endpoint address meets the endpoint\'s ingress policy with the source\'s ipcache identity', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_INGRESS | F_EGRESS);
    ipcache.update('10.199.220.0/24', { identity: 16777220, flags: 0 });
    const denied = to(A, in4(A, '10.199.220.9', TCP, tcp(48000, 80, SYN)));
    const e = assertDropped(denied, POLICY_DENIED, 'no ingress entry');
    assert.deepEqual(
      [e.obsPoint, e.flags, e.endpointId, e.srcEndpoint, e.dstEndpoint, e.srcIdentity, e.dstIdentity],
      [OBS_TO_ENDPOINT, INGRESS, A.id, 0, A.id, 16777220, A.identity],
    );
    rule(A, 'ingress', 16777220, TCP, 80, 16, { cookie: 0x90001 });
    const ok = to(A, in4(A, '10.199.220.9', TCP, tcp(48001, 80, SYN)));
    assert.equal(ok.retval, TC_ACT_OK);
    const v = only(ok.events, FLOW_EVENT_POLICY_VERDICT);
    assert.deepEqual([v.ingressCookie, v.flags & (INGRESS | EGRESS), v.srcIdentity, v.endpointId], [0x90001, INGRESS, 16777220, A.id]);
    const trace = only(ok.events, FLOW_EVENT_TRACE);
    assert.deepEqual([trace.obsPoint, trace.dstEndpoint, trace.flags], [OBS_TO_ENDPOINT, A.id, REPLY_KNOWN]);
    const entry = ct.lookup(ctKeyOf('10.199.220.9', A.ipv4, TCP, 48001, 80));
    assert.ok(entry);
    assert.deepEqual([entry.srcIdentity, entry.dstIdentity, entry.ingressCookie], [16777220, A.identity, 0x90001]);
    // A world source on the same port: denied.
    assert.equal(assertDropped(to(A, in4(A, '192.0.2.9', TCP, tcp(48002, 80, SYN))), POLICY_DENIED, 'world').srcIdentity, IDENTITY_WORLD);
    // A's answer leaves through from_endpoint on the connection although A's egress allows nothing.
    const answer = from(A, out4(A, '10.199.220.9', TCP, tcp(80, 48001, SYN | ACK)));
    assert.equal(answer.retval, TC_ACT_OK);
    assert.deepEqual([only(answer.events, FLOW_EVENT_TRACE).flags, only(answer.events, FLOW_EVENT_TRACE).obsPoint], [REPLY_KNOWN | IS_REPLY, OBS_TO_STACK]);
  });

  test('IPv6: egress allow and deny, the reply on conntrack, ICMPv6 echo', (t) => {
    if (skipUnlessRoot(t)) return;
    setFlags(A, F_EGRESS);
    setFlags(B, F_EGRESS);
    rule(A, 'egress', B.identity, TCP, 443, 16, { cookie: 0xa0001 });
    const syn = from(A, out6(A, B.ipv6, TCP, tcp(49000, 443, SYN)));
    assert.equal(syn.retval, TC_ACT_REDIRECT);
    assert.equal(only(syn.events, FLOW_EVENT_POLICY_VERDICT).egressCookie, 0xa0001);
    const entry = ct.lookup(ctKeyOf(A.ipv6, B.ipv6, TCP, 49000, 443));
    assert.ok(entry, 'an IPv6 conntrack entry');
    assert.deepEqual([entry.srcIdentity, entry.dstIdentity, entry.egressCookie], [A.identity, B.identity, 0xa0001]);
    const e = assertDropped(from(A, out6(A, B.ipv6, TCP, tcp(49000, 444, SYN))), POLICY_DENIED, 'IPv6 port 444');
    assert.deepEqual([e.ipVersion, e.flags, e.srcEndpoint, e.dstEndpoint], [6, EGRESS, A.id, B.id]);
    const reply = from(B, out6(B, A.ipv6, TCP, tcp(443, 49000, SYN | ACK)));
    assert.equal(reply.retval, TC_ACT_REDIRECT);
    assert.equal(only(reply.events, FLOW_EVENT_TRACE).flags, REPLY_KNOWN | IS_REPLY);
    assertDropped(from(B, out6(B, A.ipv6, TCP, tcp(49001, 443, SYN))), POLICY_DENIED, 'B\'s own IPv6 SYN');

    rule(A, 'egress', B.identity, ICMPV6, 128 << 8, 8, { cookie: 0xa0002 });
    assert.equal(from(A, out6(A, B.ipv6, ICMPV6, icmpEcho(128, 0x2222))).retval, TC_ACT_REDIRECT);
    assert.equal(ct.lookup(ctKeyOf(A.ipv6, B.ipv6, ICMPV6, 0x2222, 0x2222))?.egressCookie, 0xa0002);
    const pong = from(B, out6(B, A.ipv6, ICMPV6, icmpEcho(129, 0x2222)));
    assert.equal(pong.retval, TC_ACT_REDIRECT, 'the echo reply passes');
    assert.equal(only(pong.events, FLOW_EVENT_TRACE).flags, REPLY_KNOWN | IS_REPLY);
    assertDropped(from(B, out6(B, A.ipv6, ICMPV6, icmpEcho(128, 0x2223))), POLICY_DENIED, 'B\'s own echo request');
    assertDropped(from(B, out6(B, A.ipv6, ICMPV6, icmpEcho(128, 0x2222))), POLICY_DENIED, 'B\'s own echo request with A\'s identifier');
  });
});
