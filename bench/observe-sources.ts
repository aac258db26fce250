/**
 * Test support for bench/observe.ts: enrichment sources shaped like the
 * agent's (src/agent/agent.ts wires EndpointManager views, PolicyEngine.ruleOf
 * and the identity allocator into FlowPipeline), and varied in-memory
 * `struct flow_event` records. No BPF, no root: the memory child
 * (observe-memory.ts) uses this too.
 */
import type { EnrichmentSources } from '../src/observe/pipeline.js';
import type { EndpointView } from '../src/observe/hubble.js';
import type { RuleRef } from '../src/observe/store.js';
import { addr, flowEventBytes } from '../src/observe/test-events.js';
import { FLOW_EVENT_SIZE } from '../src/datapath/codecs/flow-event.js';

/** Endpoints the enrichment knows (the agent's EndpointManager views). */
export const ENDPOINT_COUNT = 100;
export const NAMESPACE = 'bench';

/** One endpoint of the bench's node: IDs 1..ENDPOINT_COUNT. */
export interface BenchEndpoint {
  id: number;
  name: string;
  ipv4: string;
  ipv6: string;
  identity: number;
  /** `app` label value (unique per endpoint). */
  app: string;
}

export function benchEndpoint(id: number): BenchEndpoint {
  return {
    id,
    name: `pod-${id}`,
    ipv4: `10.199.221.${id}`,
    ipv6: `fd99:221::${id.toString(16)}`,
    identity: 4000 + id,
    app: `svc-${id}`,
  };
}

export const BENCH_ENDPOINTS: readonly BenchEndpoint[] = Array.from({ length: ENDPOINT_COUNT }, (_, i) => benchEndpoint(i + 1));

/** A policy cookie as src/policy/types.ts encodes it: policy ID × 65536 + rule index + 1. */
export function cookieOf(policyId: number, index: number): number {
  return policyId * 65536 + index + 1;
}

/** Policies by ID, as PolicyEngine's repository would return them. */
const POLICIES = new Map<number, { kind: string; name: string; namespace?: string }>(
  Array.from({ length: 20 }, (_, i) => [i + 1, { kind: 'CiliumNetworkPolicy', name: `policy-${i + 1}`, namespace: NAMESPACE }]),
);

const RESERVED_LABELS = new Map<number, string[]>([
  [1, ['reserved:host']], [2, ['reserved:world']], [3, ['reserved:unmanaged']], [4, ['reserved:health']],
  [5, ['reserved:init']], [6, ['reserved:remote-node']], [7, ['reserved:kube-apiserver']],
]);

export interface SourcesOptions {
  /**
   * `fresh` (default): `rule()` builds a new object per call, as
   * PolicyEngine.ruleOf does today; `cached`: one object per cookie (what a
   * cache in ruleOf would give), to show what the per-flow objects cost.
   */
  rules?: 'fresh' | 'cached';
}

/** Enrichment sources over {@link BENCH_ENDPOINTS}: Maps by ID and by address, cookie → rule, identity → labels. */
export function benchSources(nodeName: string, opts: SourcesOptions = {}): EnrichmentSources {
  const byId = new Map<number, EndpointView>();
  const byIp = new Map<string, EndpointView>();
  const identityLabels = new Map<number, string[]>(RESERVED_LABELS);
  for (const e of BENCH_ENDPOINTS) {
    const labels = [`k8s:app=${e.app}`, `k8s:io.kubernetes.pod.namespace=${NAMESPACE}`, `k8s:tier=${e.id % 3 === 0 ? 'db' : e.id % 3 === 1 ? 'web' : 'api'}`].sort();
    const v: EndpointView = { id: e.id, name: e.name, namespace: NAMESPACE, labels, hostIfname: `lxc${e.id.toString(16).padStart(8, '0')}` };
    byId.set(e.id, v);
    byIp.set(e.ipv4, v);
    byIp.set(e.ipv6, v);
    identityLabels.set(e.identity, labels);
  }
  // PolicyEngine.ruleOf: decode the cookie, look the policy up, build the reference.
  const ruleOf = (cookie: number): RuleRef | undefined => {
    const policyId = Math.floor(cookie / 65536);
    const index = (cookie % 65536) - 1;
    if (cookie === 0) return undefined;
    const p = POLICIES.get(policyId);
    if (!p) return undefined;
    return { kind: p.kind, name: p.name, ...(p.namespace !== undefined ? { namespace: p.namespace } : {}), index };
  };
  const cache = new Map<number, RuleRef | undefined>();
  const rule = opts.rules === 'cached'
    ? (cookie: number): RuleRef | undefined => {
      let r = cache.get(cookie);
      if (r === undefined && !cache.has(cookie)) { r = ruleOf(cookie); cache.set(cookie, r); }
      return r;
    }
    : ruleOf;
  return {
    nodeName,
    endpoint: (id) => byId.get(id),
    endpointByIp: (ip) => byIp.get(ip),
    rule,
    identityLabels: (id) => identityLabels.get(id),
  };
}

/**
 * `count` varied records (types, verdicts, families, protocols, endpoints,
 * ports, cookies) packed back to back, FLOW_EVENT_SIZE bytes each: about the
 * mix the datapath bench produces (see observe-ingest.ts), for filling a
 * store without a kernel.
 */
export function variedRecords(count: number): Buffer {
  const out = Buffer.alloc(count * FLOW_EVENT_SIZE);
  const n = BENCH_ENDPOINTS.length;
  for (let i = 0; i < count; i++) {
    const a = BENCH_ENDPOINTS[(i * 7) % n] as BenchEndpoint;
    const b = BENCH_ENDPOINTS[(i * 13 + 5) % n] as BenchEndpoint;
    const sport = 32768 + ((i * 7919) % 28000);
    const v6 = i % 5 === 1;
    const base = {
      endpointId: a.id, srcEndpoint: a.id, dstEndpoint: b.id, srcIdentity: a.identity, dstIdentity: b.identity,
      family: v6 ? 10 : 2, srcAddr: addr(v6 ? a.ipv6 : a.ipv4), dstAddr: addr(v6 ? b.ipv6 : b.ipv4),
      ethProto: v6 ? 0x86dd : 0x0800, srcPort: sport, pktLen: 60 + (i % 1400), flags: 0x01,
    };
    let rec: Buffer;
    switch (i % 10) {
      case 0: case 1: case 2: // local TCP trace
        rec = flowEventBytes({ ...base, type: 4, obsPoint: 101, verdict: 1, ipProto: 6, tcpFlags: 0x02, dstPort: 80 + (i % 4) });
        break;
      case 3: case 4: // UDP trace to the world
        rec = flowEventBytes({ ...base, type: 4, obsPoint: 3, verdict: 1, ipProto: 17, tcpFlags: 0, dstEndpoint: 0, dstIdentity: 2, dstPort: 53, dstAddr: addr(v6 ? '2001:db8::53' : '192.0.2.53') });
        break;
      case 5: // policy verdict, allowed by a rule
        rec = flowEventBytes({ ...base, type: 5, obsPoint: 0, verdict: 1, ipProto: 6, tcpFlags: 0x02, dstPort: 443, egressCookie: cookieOf(1 + (i % 20), i % 3), matchType: 2, flags: 0x08 });
        break;
      case 6: // policy drop by a deny rule
        rec = flowEventBytes({ ...base, type: 1, obsPoint: 5, verdict: 2, dropReason: 181, ipProto: 17, tcpFlags: 0, dstPort: 5432, egressCookie: cookieOf(1 + (i % 20), 0), matchType: 2, flags: 0x08 });
        break;
      case 7: // spoofed source: drop before any lookup (the peer found by address)
        rec = flowEventBytes({ ...base, type: 1, obsPoint: 5, verdict: 2, dropReason: 132, ipProto: 17, tcpFlags: 0, dstEndpoint: 0, srcIdentity: 0, dstIdentity: 0, dstPort: 9000, flags: 0 });
        break;
      default: // ingress from the world
        rec = flowEventBytes({ ...base, endpointId: b.id, srcEndpoint: 0, srcIdentity: 2, type: 4, obsPoint: 101, verdict: 1, ipProto: 6, tcpFlags: 0x02, dstPort: 8443, srcAddr: addr(v6 ? '2001:db8::7' : '198.51.100.7') });
    }
    rec.copy(out, i * FLOW_EVENT_SIZE);
  }
  return out;
}
