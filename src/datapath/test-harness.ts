/**
 * Test-only harness for the endpoint programs under BPF_PROG_TEST_RUN (the
 * datapath tests policy.test.ts and lb.test.ts): a private bpffs with the
 * endpoint datapath loaded, its events ring and the conntrack, policy and
 * endpoint maps opened, and a throw-away namespace whose devices stand for
 * the endpoints' host-side veths (so skb->ifindex picks each endpoint's
 * `lxc_config` entry). Frames run through from_endpoint / to_endpoint on a
 * device and come back with the verdict, the events and the rewritten frame.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { BpfMap } from '../bpf/map.js';
import type { Program } from '../bpf/program.js';
import type { RingBuffer } from '../bpf/ringbuf.js';
import { inNetns } from '../netlink/netns.js';
import { mountTempBpffs } from '../../test/helpers/bpffs.js';
import { createNetns, createVethPair, ifindexIn, type Cleanup, type Netns } from '../../test/helpers/netns.js';
import { endpointsMap, loadEndpointDatapath, lxcConfigOf, openEvents, type DecodedFlowEvent, type EndpointDatapath } from './lxc.js';
import { ctMap, ipcacheMap, policyMap, policyStateMap, writePolicyRevision } from './policy-maps.js';
import type { EndpointInfo } from './codecs/endpoint.js';
import type { IpcacheValue } from './codecs/ipcache.js';
import type { PolicyKey, PolicyState, PolicyValue } from './codecs/policy.js';
import type { CtEntry, CtKey } from './codecs/conntrack.js';
import { FLOW_EVENT_DROP, VERDICT_DROPPED } from './codecs/flow-event.js';
import { TC_ACT_SHOT, drainEvents, skbCtx } from './test-frames.js';

/** A local endpoint as the programs know it. */
export interface TestEndpoint {
  id: number;
  ipv4: string;
  ipv6: string;
  mac: string;
  hostMac: string;
  identity: number;
  /** Its host-side device in the harness's namespace (set by {@link DatapathHarness.open}). */
  ifindex: number;
}

/** What one frame did: the program's verdict, the events it emitted and the frame as it left. */
export interface Run {
  retval: number;
  events: DecodedFlowEvent[];
  data: Buffer;
}

export class DatapathHarness {
  private constructor(
    readonly pinDir: string,
    readonly dp: EndpointDatapath,
    readonly rb: RingBuffer,
    readonly runNs: Netns,
    readonly endpoints: BpfMap<string, EndpointInfo>,
    readonly ct: BpfMap<CtKey, CtEntry>,
    readonly policy: BpfMap<PolicyKey, PolicyValue>,
    readonly ipcache: BpfMap<string, IpcacheValue>,
    readonly state: BpfMap<number, PolicyState>,
  ) {}

  /**
   * Mounts a bpffs, loads the datapath and creates namespace `name` with one
   * device per entry of `devices` (veth pairs: the devices are their ends),
   * setting each one's `ifindex`. Everything is released through `cleanup`.
   */
  static open(cleanup: Cleanup, name: string, devices: { ifindex: number }[]): DatapathHarness {
    const fs = mountTempBpffs();
    cleanup.add(() => fs.unmount(), 'bpffs');
    const pinDir = join(fs.path, 'waggle');
    const dp = loadEndpointDatapath({ pinDir, routerIpv4: '10.199.250.1', routerIpv6: 'fd99:250::1' });
    cleanup.add(() => dp.close(), 'endpoint datapath');
    const rb = openEvents(pinDir);
    cleanup.add(() => rb.close(), 'events reader');
    const opened = { endpoints: endpointsMap(pinDir), ct: ctMap(pinDir), policy: policyMap(pinDir), ipcache: ipcacheMap(pinDir), state: policyStateMap(pinDir) };
    for (const [what, m] of Object.entries(opened)) cleanup.add(() => m.close(), `${what} map`);
    const runNs = createNetns(name);
    cleanup.add(() => runNs.remove(), 'test-run netns');
    const ifnames = devices.map((_, i) => `wgh${i}`);
    for (let i = 0; i < ifnames.length; i += 2) {
      createVethPair({ a: { netns: runNs, name: ifnames[i] as string }, b: { netns: runNs, name: ifnames[i + 1] ?? `wgh${i + 1}` } });
    }
    devices.forEach((d, i) => { d.ifindex = ifindexIn(runNs, ifnames[i] as string); });
    return new DatapathHarness(pinDir, dp, rb, runNs, opened.endpoints, opened.ct, opened.policy, opened.ipcache, opened.state);
  }

  /** Empties the policy, ipcache and conntrack maps and sets the policy revision to 1. */
  reset(): void {
    this.policy.clear();
    this.ipcache.clear();
    this.ct.clear();
    writePolicyRevision(this.state, 1);
  }

  /** Endpoint `ep` with policy flags `flags` where both programs read them: its lxc_config entry and its endpoints entries. */
  setFlags(ep: TestEndpoint, flags: number): void {
    this.dp.config.update(ep.ifindex, lxcConfigOf({
      endpointId: ep.id, hostIfindex: ep.ifindex, ipv4: ep.ipv4, ipv6: ep.ipv6, mac: ep.mac, hostMac: ep.hostMac, identity: ep.identity, policyFlags: flags,
    }));
    const info: EndpointInfo = { ifindex: ep.ifindex, endpointId: ep.id, mac: ep.mac, nodeMac: ep.hostMac, flags, identity: ep.identity };
    this.endpoints.update(ep.ipv4, info);
    this.endpoints.update(ep.ipv6, info);
  }

  /** Runs `frame` through `program` on device `ifindex` (or the endpoint's). */
  run(program: Program | 'from_endpoint' | 'to_endpoint', on: { ifindex: number }, frame: Buffer): Run {
    this.rb.skip();
    const prog = typeof program === 'string' ? this.dp.program(program) : program;
    const r = inNetns(this.runNs.path, () => prog.testRun({ data: frame, ctx: skbCtx(on.ifindex), ctxOutSize: 256 }));
    return { retval: r.retval, events: drainEvents(this.rb), data: r.data };
  }

  /** A frame leaving `ep` (from_endpoint on its device). */
  from(ep: TestEndpoint, frame: Buffer): Run {
    return this.run('from_endpoint', ep, frame);
  }

  /** A frame the node's stack sends to `ep` (to_endpoint on its device). */
  to(ep: TestEndpoint, frame: Buffer): Run {
    return this.run('to_endpoint', ep, frame);
  }
}

/** The one event of `type` among `events`. */
export function only(events: DecodedFlowEvent[], type: number): DecodedFlowEvent {
  const found = events.filter((e) => e.type === type);
  assert.equal(found.length, 1, `one event of type ${type} in ${JSON.stringify(events.map((e) => e.typeName))}`);
  return found[0] as DecodedFlowEvent;
}

/** Asserts a drop: TC_ACT_SHOT and one drop event with `reason`; returns the event. */
export function assertDropped(r: { retval: number; events: DecodedFlowEvent[] }, reason: number, what: string): DecodedFlowEvent {
  assert.equal(r.retval, TC_ACT_SHOT, `${what}: dropped`);
  const e = only(r.events, FLOW_EVENT_DROP);
  assert.equal(e.dropReason, reason, `${what}: drop reason ${e.dropReasonName}`);
  assert.equal(e.verdict, VERDICT_DROPPED);
  return e;
}

/** An endpoint namespace joined to a "node" namespace by a veth pair (for real traffic through attached programs). */
export interface VethEndpoint {
  id: number;
  ns: Netns;
  ipv4: string;
  ipv6: string;
  /** The MAC of eth0 in the endpoint's namespace. */
  mac: string;
  /** The host-side device in the node namespace, its ifindex there and its MAC. */
  hostIf: string;
  hostIfindex: number;
  hostMac: string;
}

/** The MAC address of `ifname` in `ns`. */
export function linkMac(ns: Netns, ifname: string): string {
  return (JSON.parse(ns.exec(['ip', '-j', 'link', 'show', 'dev', ifname])) as { address: string }[])[0]?.address ?? '';
}

/**
 * A "node" namespace and `count` endpoint namespaces, each with eth0 joined
 * to a host-side veth `<ifPrefix><pid>e<i>` in the node namespace that has no
 * address at all (no IPv6 link-local either), as the agent makes them;
 * endpoint i (from 1) gets ID `idBase + i` and the addresses `address(i)`
 * gives. Everything is removed through `cleanup`.
 */
export function vethEndpoints(cleanup: Cleanup, opts: {
  prefix: string; ifPrefix: string; count: number; idBase: number; address: (i: number) => { ipv4: string; ipv6: string };
}): { node: Netns; eps: VethEndpoint[] } {
  const node = createNetns(`${opts.prefix}-node`);
  cleanup.add(() => node.remove(), 'node netns');
  const eps: VethEndpoint[] = [];
  for (let i = 1; i <= opts.count; i++) {
    const ns = createNetns(`${opts.prefix}-ep${i}`);
    cleanup.add(() => ns.remove(), `endpoint netns ${i}`);
    const hostIf = `${opts.ifPrefix}${process.pid % 10000}e${i}`.slice(0, 15);
    createVethPair({ a: { netns: ns, name: 'eth0' }, b: { netns: node, name: hostIf } });
    node.exec(['ip', 'link', 'set', 'dev', hostIf, 'addrgenmode', 'none']);
    node.exec(['ip', 'addr', 'flush', 'dev', hostIf]);
    eps.push({ id: opts.idBase + i, ns, ...opts.address(i), mac: linkMac(ns, 'eth0'), hostIf, hostIfindex: ifindexIn(node, hostIf), hostMac: linkMac(node, hostIf) });
  }
  return { node, eps };
}
