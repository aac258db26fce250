/**
 * Part 1 of the policy benchmark: the endpoint program's per-packet cost
 * (BPF_PROG_TEST_RUN, nanoseconds per packet as the kernel measures them) as
 * the `policy` map grows, with a large `ipcache`.
 *
 * One copy of bpf/lxc.bpf.o per policy size, each loaded with its own maps
 * under its own directory of a temporary bpffs (so the sizes can be
 * interleaved without refilling), all run on the same device: one end of a
 * veth pair in a throw-away namespace gives skb->ifindex a real `lxc_config`
 * entry. Every map is filled directly through the codecs:
 *
 * - `lxc_config`: endpoint 7 (10.199.200.7), identity 60000, egress policy on;
 * - `ipcache`: IDENTITIES /32 prefixes 10.199.0.0 … → identities 256 …;
 * - `policy`: N egress entries of endpoint 7: the one that allows the measured
 *   packet (ICMP timestamp, type 13, to the peer 10.199.19.136) plus N − 1
 *   per-peer entries (TCP 443 to other identities of the ipcache);
 * - `policy_state`: revision 1; `ct`: one UDP connection (made by the
 *   program itself from one primed packet, under a temporary allow entry that
 *   is deleted again before measuring).
 *
 * Two paths, both to a destination that is not a local endpoint (TC_ACT_OK,
 * the frame is not rewritten, so `repeat` runs see the same packet):
 * (a) ct hit: a UDP packet of the established connection (lookup_lxc_config,
 *     parse, endpoint lookup, conntrack lookup and update, metrics);
 * (b) policy: an ICMP timestamp request, which conntrack does not track, so
 *     every run resolves the destination's identity in the ipcache (LPM) and
 *     does the policy decision for the peer's identity and for "any peer"
 *     (each: the single-port hash, then the range/wildcard trie). The N
 *     entries are written where the agent writes them: single-port entries
 *     (here N − 1 TCP rules for other peers) in the hash, the ICMP type rule
 *     in the trie.
 * Checked before measuring: (a) passes and its ct entry counts the runs; (b)
 * passes, creates no ct entry, and the same packet to a peer without a rule
 * is dropped (so the verdict does come from the policy map).
 */
import { join } from 'node:path';
import { inNetns } from '../src/netlink/netns.js';
import { loadEndpointDatapath, type EndpointDatapath } from '../src/datapath/lxc.js';
import {
  ctEntries, ctMap, ipcacheMap, isExactPolicyKey, policyExactMap, policyMap, policyStateMap, writePolicyRevision,
} from '../src/datapath/policy-maps.js';
import type { PolicyKey } from '../src/datapath/codecs/policy.js';
import { TC_ACT_OK, TC_ACT_SHOT, eth, icmpEcho, ipv4, skbCtx, udp } from '../src/datapath/test-frames.js';
import { mountTempBpffs } from '../test/helpers/bpffs.js';
import { createNetns, createVethPair, ifindexIn, type Cleanup } from '../test/helpers/netns.js';
import { median } from './lib.js';

export interface TestrunConfig {
  sizes: number[];
  identities: number;
  repeat: number;
  rounds: number;
}

export interface PathResult {
  /** Median kernel ns/packet per size, and min / max over the rounds. */
  bySize: Record<number, { median: number; min: number; max: number }>;
  /** Largest median / smallest median. */
  maxOverMin: number;
  /** Per size: the median over rounds of its ns / the smallest size's ns in the same round (slices ms apart). */
  pairedVsSmallest: Record<number, number>;
}

export interface TestrunResult {
  ctHit: PathResult;
  policy: PathResult;
  rounds: number;
}

const EP = { id: 7, ip: '10.199.200.7', mac: '02:00:00:00:00:07', hostMac: '02:00:00:00:01:07', identity: 60000 };
const FIRST_IDENTITY = 256;
const LXC_CONFIG_F_POLICY_EGRESS = 0x2;
const IPPROTO_ICMP = 1;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const ICMP_TIMESTAMP = 13;

const peerIp = (i: number): string => `10.199.${i >> 8}.${i & 255}`;

/** Peer `i` of the ipcache: the measured destination sits in the middle. */
function target(identities: number): number {
  return identities >> 1;
}

function egressKey(identity: number, proto: number, port: number, portPrefixLen: number): PolicyKey {
  return { endpointId: EP.id, direction: 'egress', identity, proto, port, portPrefixLen };
}

/** Fills one datapath's maps for `n` policy entries; primes the UDP connection. */
function fill(pinDir: string, n: number, identities: number, runOn: (frame: Buffer) => number, udpFrame: Buffer, icmpFrame: Buffer, deniedFrame: Buffer): void {
  const t = target(identities);
  const ipc = ipcacheMap(pinDir);
  const pol = policyMap(pinDir);
  const exact = policyExactMap(pinDir);
  // As the agent writes them: single-port entries in the hash, the rest in the trie.
  const put = (k: PolicyKey, v: { cookie: number; deny: number; matchType: number }): void => (isExactPolicyKey(k) ? exact : pol).update(k, v);
  const state = policyStateMap(pinDir);
  const ct = ctMap(pinDir);
  try {
    for (let i = 0; i < identities; i++) ipc.update(`${peerIp(i)}/32`, { identity: FIRST_IDENTITY + i, flags: 0 });
    writePolicyRevision(state, 1);
    const allow = { cookie: 0x10001, deny: 0, matchType: 2 };
    put(egressKey(FIRST_IDENTITY + t, IPPROTO_ICMP, ICMP_TIMESTAMP << 8, 8), allow);
    // N − 1 other peers (never the target), spread over the identities.
    const others = n - 1;
    for (let k = 0; k < others; k++) {
      let i = Math.floor((k * (identities - 1)) / Math.max(others, 1));
      if (i >= t) i++;
      put(egressKey(FIRST_IDENTITY + i, IPPROTO_TCP, 443, 16), { cookie: 0x10002 + k, deny: 0, matchType: 2 });
    }
    if (pol.count() + exact.count() !== n) throw new Error(`policy maps of size ${n} hold ${pol.count() + exact.count()} entries`);
    // The connection of path (a): made by the program under a temporary allow entry.
    const tmp = egressKey(FIRST_IDENTITY + t, IPPROTO_UDP, 5001, 16);
    put(tmp, allow);
    const primed = runOn(udpFrame);
    (isExactPolicyKey(tmp) ? exact : pol).delete(tmp);
    if (primed !== TC_ACT_OK) throw new Error(`priming the UDP connection returned ${primed}, not TC_ACT_OK`);
    if (ctEntries(ct).length !== 1) throw new Error(`expected one conntrack entry after priming, found ${ctEntries(ct).length}`);
    if (runOn(icmpFrame) !== TC_ACT_OK) throw new Error('the ICMP timestamp to the target is not allowed');
    if (runOn(deniedFrame) !== TC_ACT_SHOT) throw new Error('the ICMP timestamp to a peer without a rule is not dropped');
    if (ctEntries(ct).length !== 1) throw new Error('ICMP timestamps made conntrack entries');
  } finally {
    ipc.close();
    pol.close();
    exact.close();
    state.close();
    ct.close();
  }
}

function ctPackets(pinDir: string): number {
  const ct = ctMap(pinDir);
  try {
    return ctEntries(ct).reduce((s, [, v]) => s + v.packetsFwd, 0);
  } finally {
    ct.close();
  }
}

function summarise(samples: Record<number, number[]>): PathResult {
  const bySize: PathResult['bySize'] = {};
  for (const [n, xs] of Object.entries(samples)) bySize[Number(n)] = { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
  const meds = Object.values(bySize).map((r) => r.median);
  const sizes = Object.keys(samples).map(Number).sort((a, b) => a - b);
  const smallest = samples[sizes[0] as number] as number[];
  const pairedVsSmallest: Record<number, number> = {};
  for (const n of sizes) pairedVsSmallest[n] = median((samples[n] as number[]).map((x, i) => x / (smallest[i] as number)));
  return { bySize, maxOverMin: Math.max(...meds) / Math.min(...meds), pairedVsSmallest };
}

export async function runTestrun(cfg: TestrunConfig, cleanup: Cleanup, progress: (s: string) => void): Promise<TestrunResult> {
  if (cfg.identities < 2) throw new Error('testrun needs at least 2 identities');
  const fs = mountTempBpffs();
  cleanup.add(() => fs.unmount(), 'unmount the test-run bpffs');
  const ns = createNetns('wglb-poltr');
  cleanup.add(() => ns.remove(), 'remove the test-run netns');
  createVethPair({ a: { netns: ns, name: 'wgbtr0' }, b: { netns: ns, name: 'wgbtr1' } });
  const ifindex = ifindexIn(ns, 'wgbtr0');
  const ctx = skbCtx(ifindex);

  const t = target(cfg.identities);
  const frame = (dst: string, proto: number, l4: Buffer): Buffer => eth(EP.hostMac, EP.mac, 0x0800, ipv4(EP.ip, dst, proto, l4));
  const udpFrame = frame(peerIp(t), IPPROTO_UDP, udp(40000, 5001));
  const icmpFrame = frame(peerIp(t), IPPROTO_ICMP, icmpEcho(ICMP_TIMESTAMP, 1));
  const deniedFrame = frame(peerIp(t === 0 ? 1 : 0), IPPROTO_ICMP, icmpEcho(ICMP_TIMESTAMP, 1));

  const dps = new Map<number, { dp: EndpointDatapath; pinDir: string }>();
  for (const n of cfg.sizes) {
    const pinDir = join(fs.path, `n${n}`);
    const dp = loadEndpointDatapath({ pinDir, routerIpv4: '10.199.250.1' });
    cleanup.add(() => dp.close(), `close datapath ${n}`);
    dp.config.update(ifindex, { endpointId: EP.id, ipv4: EP.ip, ipv6: '::', mac: EP.mac, hostMac: EP.hostMac, flags: LXC_CONFIG_F_POLICY_EGRESS, identity: EP.identity });
    const runOnce = (f: Buffer): number => inNetns(ns.path, () => dp.program('from_endpoint').testRun({ data: f, ctx })).retval;
    fill(pinDir, n, cfg.identities, runOnce, udpFrame, icmpFrame, deniedFrame);
    dps.set(n, { dp, pinDir });
  }
  progress(`  test run: ${cfg.sizes.length} datapaths loaded and filled (${cfg.identities} ipcache entries each)`);

  const paths = [{ name: 'ctHit', data: udpFrame }, { name: 'policy', data: icmpFrame }] as const;
  const samples: Record<string, Record<number, number[]>> = { ctHit: {}, policy: {} };
  const before = new Map([...dps].map(([n, d]) => [n, ctPackets(d.pinDir)]));
  const warmup = 2;
  for (let round = -warmup; round < cfg.rounds; round++) {
    // The sizes of one path run back to back (a few ms apart), in an order that rotates every round.
    const r0 = Math.max(round, 0);
    for (let pi = 0; pi < paths.length; pi++) {
      const p = paths[(pi + r0) % paths.length] as (typeof paths)[number];
      for (let k = 0; k < cfg.sizes.length; k++) {
        const n = cfg.sizes[(k + r0) % cfg.sizes.length] as number;
        const d = dps.get(n) as { dp: EndpointDatapath };
        const r = inNetns(ns.path, () => d.dp.program('from_endpoint').testRun({ data: p.data, ctx, repeat: cfg.repeat }));
        if (r.retval !== TC_ACT_OK) throw new Error(`test run of ${p.name} with ${n} entries returned ${r.retval}`);
        if (round >= 0) ((samples[p.name] as Record<number, number[]>)[n] ??= []).push(r.durationNs);
      }
    }
    await new Promise((r) => setImmediate(r));
  }
  for (const [n, d] of dps) {
    const counted = ctPackets(d.pinDir) - (before.get(n) as number);
    const expected = (cfg.rounds + warmup) * cfg.repeat;
    if (counted < expected) throw new Error(`ct entry of size ${n} counted ${counted} packets, expected ${expected}: not the conntrack path`);
  }
  return { ctHit: summarise(samples.ctHit as Record<number, number[]>), policy: summarise(samples.policy as Record<number, number[]>), rounds: cfg.rounds };
}
