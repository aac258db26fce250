/**
 * The service map: who talks to whom on this node, aggregated from the flows
 * as the pipeline ingests them (the web UI draws it).
 *
 * Nodes are local endpoints (by endpoint ID) and, for peers that are not
 * local endpoints, security identities (world, host, CIDR identities,
 * endpoints of other nodes). An edge is a (client, server) pair: a reply
 * (conntrack's `is_reply`) counts on the edge of the connection it answers,
 * so a TCP exchange is one edge, not two. Edges count forwarded and dropped
 * flows (trace and drop events: a policy-verdict event restates a decision
 * that a trace or drop event of the same packet already shows), with the last
 * time seen, the drop reasons and the busiest destination ports. ARP and
 * IPv6 neighbour discovery / MLD are link plumbing and are not counted.
 *
 * {@link ServiceMap.add} runs on the ingest hot path: numeric keys, two map
 * lookups and a few increments per flow, no strings. Names and labels are
 * looked up only when a snapshot is taken.
 */
import { FLOW_FLAGS } from '../datapath/codecs/flow-event.js';
import { dropReasonName } from '../datapath/drop-reasons.js';
import type { EndpointView } from './hubble.js';
import type { FlowStore, StoredFlow } from './store.js';

/** What a node of the map is. */
export type MapNodeKind =
  /** A local endpoint. */
  | 'endpoint'
  /** An endpoint identity that is not a local endpoint (another node's). */
  | 'remote'
  /** A reserved identity: host, world, remote-node, … */
  | 'reserved'
  /** A CIDR identity. */
  | 'cidr'
  /** A peer whose identity the datapath did not know (identity 0). */
  | 'unknown';

export interface MapNode {
  /** Stable key: `endpoint:ID` or `identity:N`. */
  id: string;
  kind: MapNodeKind;
  /** Endpoint name, or the identity's name (`world`, `host`, `10.0.0.0/8`, the app label, `identity N`). */
  name: string;
  /** Kubernetes namespace ('' for nodes outside any: host, world, CIDRs). */
  namespace: string;
  /** The `app` label's value ('' when there is none). */
  app: string;
  /** Group key: `namespace/app`; the UI draws a box per namespace and groups by app inside. */
  group: string;
  labels: string[];
  identity: number;
  /** Local endpoints: the datapath endpoint ID. */
  endpointId?: number;
  /** Local endpoints: false once the endpoint is deleted (kept while its edges are). */
  live?: boolean;
}

export interface MapPort {
  /** `TCP`, `UDP`, `SCTP`, `ICMPv4`, `ICMPv6` or `IP/N`. */
  protocol: string;
  /** Destination port (0 for protocols without ports). */
  port: number;
  flows: number;
}

export interface MapEdge {
  /** `FROM->TO` (node ids). */
  id: string;
  from: string;
  to: string;
  forwarded: number;
  dropped: number;
  /** Wall-clock ms of the first and the last flow. */
  firstSeen: number;
  lastSeen: number;
  /** Drop reason name → flows. */
  dropReasons: Record<string, number>;
  /** The busiest destination ports of requests, most flows first (at most 5). */
  ports: MapPort[];
  /** Request flows to ports past the 16 distinct ones an edge tracks. */
  otherPorts: number;
}

export interface MapSnapshot {
  nodeName: string;
  /** When the snapshot was taken (ms since the epoch). */
  time: number;
  /** Nodes sorted by namespace, app, name (so by group). */
  nodes: MapNode[];
  edges: MapEdge[];
  /** Flows counted on edges since the agent started; edges dropped to stay within the limit. */
  flows: number;
  evictedEdges: number;
}

export interface ServiceMapOptions {
  nodeName?: string;
  /** Local endpoints now (they are nodes even before they talk). */
  endpoints?: () => EndpointView[];
  /** Labels of an identity (default: the store's identity labels). */
  identityLabels?: (identity: number) => readonly string[] | undefined;
  /** Most edges kept; past it the least recently seen tenth go (default 20,000). */
  maxEdges?: number;
  /** A deleted endpoint's node and edges stay this long after their last flow (ms, default 10 minutes). */
  deletedRetentionMs?: number;
}

const IS_REPLY = FLOW_FLAGS.IS_REPLY;
/** Distinct (protocol, port) pairs tracked per edge; more are counted as `otherPorts`. */
const MAX_PORTS_PER_EDGE = 16;

const RESERVED_NAMES: Record<number, string> = {
  1: 'host', 2: 'world', 3: 'unmanaged', 4: 'health', 5: 'init', 6: 'remote-node', 7: 'kube-apiserver', 8: 'ingress', 9: 'world-ipv4', 10: 'world-ipv6',
};
const PROTOCOL_NAMES: Record<number, string> = { 1: 'ICMPv4', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP' };

interface NodeState {
  /** Endpoint ID (endpoint nodes) or identity (identity nodes). */
  readonly key: number;
  readonly isEndpoint: boolean;
  /** Endpoint nodes: the latest view a flow carried. */
  view: EndpointView | undefined;
  /** Identity nodes: the identity; endpoint nodes: the last identity seen. */
  identity: number;
  /** Edges from this node, by destination node. */
  readonly out: Map<NodeState, EdgeState>;
  /** Edges that end here. */
  incoming: number;
  lastSeen: number;
}

interface EdgeState {
  readonly from: NodeState;
  readonly to: NodeState;
  forwarded: number;
  dropped: number;
  firstSeen: number;
  lastSeen: number;
  /** Destination ports of requests: keys (proto << 16 | port) and their flows, side by side (a scan of a few numbers beats a Map). */
  portKeys: number[];
  portFlows: number[];
  otherPorts: number;
  /** Drop reason code → flows. */
  dropReasons: Map<number, number> | undefined;
}

function labelValue(labels: readonly string[], key: string): string | undefined {
  for (const l of labels) {
    const eq = l.indexOf('=');
    if (eq < 0) continue;
    const k = l.slice(0, eq);
    const colon = k.indexOf(':');
    if ((colon < 0 ? k : k.slice(colon + 1)) === key) return l.slice(eq + 1);
  }
  return undefined;
}

function appOf(labels: readonly string[]): string {
  return labelValue(labels, 'app') ?? labelValue(labels, 'app.kubernetes.io/name') ?? labelValue(labels, 'k8s-app') ?? '';
}

export class ServiceMap {
  private readonly store: FlowStore;
  private readonly opts: Required<Omit<ServiceMapOptions, 'identityLabels'>> & { identityLabels: (id: number) => readonly string[] | undefined };
  private readonly endpointNodes = new Map<number, NodeState>();
  private readonly identityNodes = new Map<number, NodeState>();
  private edgeCount = 0;
  private flowCount = 0;
  private evicted = 0;
  private changes = 0;
  private closed = false;

  /** Feed it flows with `pipeline.onFlow(map.hook)`. */
  readonly hook = (flow: StoredFlow, seq: number): void => { this.add(flow, seq); };

  constructor(store: FlowStore, opts: ServiceMapOptions = {}) {
    this.store = store;
    this.opts = {
      nodeName: opts.nodeName ?? store.nodeName,
      endpoints: opts.endpoints ?? (() => []),
      identityLabels: opts.identityLabels ?? ((id) => store.internals.identityLabels(id)),
      maxEdges: opts.maxEdges ?? 20_000,
      deletedRetentionMs: opts.deletedRetentionMs ?? 10 * 60_000,
    };
  }

  /** Grows with every change (a client re-reads the snapshot when it moved). */
  get version(): number {
    return this.changes;
  }

  get edges(): number {
    return this.edgeCount;
  }

  /** Stops counting (the pipeline keeps calling the hook; it returns at once). */
  close(): void {
    this.closed = true;
  }

  /** Counts stored flow `seq` (read through `flow`, a cursor already at it). */
  add(flow: StoredFlow, seq: number): void {
    if (this.closed) return;
    const family = flow.family;
    if (family === 0) return; // ARP and other non-IP frames
    const type = flow.type;
    if (type !== 4 && type !== 1) return; // policy verdicts restate a trace or drop
    const proto = flow.ipProto;
    if (proto === 58) {
      const icmp = flow.icmpType;
      if ((icmp >= 130 && icmp <= 137) || icmp === 143) return; // MLD, router and neighbour discovery
    }
    const srcView = flow.src;
    const dstView = flow.dst;
    const src = srcView ? this.endpointNode(srcView) : this.identityNode(flow.srcIdentity);
    const dst = dstView ? this.endpointNode(dstView) : this.identityNode(flow.dstIdentity);
    if (srcView) src.identity = flow.srcIdentity || srcView.identity || 0;
    if (dstView) dst.identity = flow.dstIdentity || dstView.identity || 0;
    const reply = (flow.flags & IS_REPLY) !== 0;
    const from = reply ? dst : src;
    const to = reply ? src : dst;
    const time = this.store.timeOf(seq);
    let e = from.out.get(to);
    if (e === undefined) {
      e = { from, to, forwarded: 0, dropped: 0, firstSeen: time, lastSeen: time, portKeys: [], portFlows: [], otherPorts: 0, dropReasons: undefined };
      from.out.set(to, e);
      to.incoming++;
      if (++this.edgeCount > this.opts.maxEdges) this.evictOldest(e);
    }
    if (flow.verdict === 2) {
      e.dropped++;
      const reason = flow.dropReason;
      const reasons = (e.dropReasons ??= new Map());
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    } else {
      e.forwarded++;
    }
    if (!reply) {
      const port = proto === 6 || proto === 17 || proto === 132 ? flow.dstPort : 0;
      const key = (proto << 16) | port;
      const keys = e.portKeys;
      const i = keys.indexOf(key);
      if (i >= 0) e.portFlows[i]!++;
      else if (keys.length < MAX_PORTS_PER_EDGE) { keys.push(key); e.portFlows.push(1); }
      else e.otherPorts++;
    }
    if (time > e.lastSeen) e.lastSeen = time;
    if (time > from.lastSeen) from.lastSeen = time;
    if (time > to.lastSeen) to.lastSeen = time;
    this.flowCount++;
    this.changes++;
  }

  private endpointNode(view: EndpointView): NodeState {
    let n = this.endpointNodes.get(view.id);
    if (n === undefined) {
      n = { key: view.id, isEndpoint: true, view, identity: view.identity ?? 0, out: new Map(), incoming: 0, lastSeen: 0 };
      this.endpointNodes.set(view.id, n);
    } else if (n.view !== view) {
      n.view = view;
    }
    return n;
  }

  private identityNode(identity: number): NodeState {
    let n = this.identityNodes.get(identity);
    if (n === undefined) {
      n = { key: identity, isEndpoint: false, view: undefined, identity, out: new Map(), incoming: 0, lastSeen: 0 };
      this.identityNodes.set(identity, n);
    }
    return n;
  }

  private removeEdge(e: EdgeState): void {
    if (!e.from.out.delete(e.to)) return;
    e.to.incoming--;
    this.edgeCount--;
  }

  /** Over the limit: the least recently seen tenth of the edges go (never `keep`, the one just made). */
  private evictOldest(keep: EdgeState): void {
    const all: EdgeState[] = [];
    for (const nodes of [this.endpointNodes, this.identityNodes]) for (const n of nodes.values()) for (const e of n.out.values()) if (e !== keep) all.push(e);
    all.sort((a, b) => a.lastSeen - b.lastSeen);
    const drop = Math.max(1, Math.ceil(this.opts.maxEdges / 10));
    for (const e of all.slice(0, drop)) { this.removeEdge(e); this.evicted++; }
    this.pruneNodes(new Set(this.opts.endpoints().map((v) => v.id)), Infinity);
  }

  /** Removes nodes without edges that are not live endpoints, and deleted endpoints idle for `retentionMs`. */
  private pruneNodes(live: ReadonlySet<number>, retentionMs: number, now = Date.now()): void {
    for (const [id, n] of this.endpointNodes) {
      if (live.has(id)) continue;
      if (now - n.lastSeen < retentionMs && (n.out.size || n.incoming)) continue;
      for (const e of [...n.out.values()]) this.removeEdge(e);
      for (const other of [...this.endpointNodes.values(), ...this.identityNodes.values()]) {
        const e = other.out.get(n);
        if (e) this.removeEdge(e);
      }
      this.endpointNodes.delete(id);
      this.changes++;
    }
    for (const [id, n] of this.identityNodes) {
      if (n.out.size || n.incoming) continue;
      this.identityNodes.delete(id);
    }
  }

  private describe(n: NodeState, live: ReadonlyMap<number, EndpointView>): MapNode {
    if (n.isEndpoint) {
      const view = live.get(n.key) ?? n.view!;
      const app = appOf(view.labels);
      return {
        id: `endpoint:${n.key}`, kind: 'endpoint', name: view.name, namespace: view.namespace, app, group: `${view.namespace}/${app}`,
        labels: [...view.labels], identity: view.identity || n.identity, endpointId: n.key, live: live.has(n.key),
      };
    }
    const id = n.key;
    const labels = [...(this.opts.identityLabels(id) ?? [])];
    let kind: MapNodeKind;
    let name: string;
    let namespace = '';
    if (id === 0) {
      kind = 'unknown';
      name = 'unknown';
    } else if (id < 256) {
      kind = 'reserved';
      name = RESERVED_NAMES[id] ?? labels.find((l) => l.startsWith('reserved:'))?.slice('reserved:'.length) ?? `reserved ${id}`;
    } else if (id >= 0x01000000 || labels.some((l) => l.startsWith('cidr:'))) {
      kind = 'cidr';
      name = labels.find((l) => l.startsWith('cidr:'))?.slice('cidr:'.length) ?? `identity ${id}`;
    } else {
      kind = 'remote';
      namespace = labelValue(labels, 'io.kubernetes.pod.namespace') ?? '';
      name = appOf(labels) || `identity ${id}`;
    }
    const app = kind === 'remote' ? appOf(labels) : '';
    return { id: `identity:${id}`, kind, name, namespace, app, group: `${namespace}/${app}`, labels, identity: id };
  }

  /** The map now: every local endpoint, every peer seen, every edge. */
  snapshot(now = Date.now()): MapSnapshot {
    const views = this.opts.endpoints();
    const live = new Map(views.map((v) => [v.id, v]));
    this.pruneNodes(new Set(live.keys()), this.opts.deletedRetentionMs, now);
    const nodes: MapNode[] = [];
    const seen = new Set<number>();
    for (const n of this.endpointNodes.values()) { nodes.push(this.describe(n, live)); seen.add(n.key); }
    for (const v of views) {
      if (seen.has(v.id)) continue;
      const app = appOf(v.labels);
      nodes.push({
        id: `endpoint:${v.id}`, kind: 'endpoint', name: v.name, namespace: v.namespace, app, group: `${v.namespace}/${app}`,
        labels: [...v.labels], identity: v.identity ?? 0, endpointId: v.id, live: true,
      });
    }
    for (const n of this.identityNodes.values()) nodes.push(this.describe(n, live));
    nodes.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.app, b.app) || cmp(a.name, b.name) || cmp(a.id, b.id));

    const edges: MapEdge[] = [];
    const nodeId = (n: NodeState): string => (n.isEndpoint ? `endpoint:${n.key}` : `identity:${n.key}`);
    for (const group of [this.endpointNodes, this.identityNodes]) {
      for (const n of group.values()) {
        for (const e of n.out.values()) {
          const from = nodeId(e.from);
          const to = nodeId(e.to);
          const ports: MapPort[] = e.portKeys
            .map((key, i) => ({ protocol: PROTOCOL_NAMES[key >>> 16] ?? `IP/${key >>> 16}`, port: key & 0xffff, flows: e.portFlows[i]! }))
            .sort((a, b) => b.flows - a.flows || a.port - b.port)
            .slice(0, 5);
          const dropReasons: Record<string, number> = {};
          for (const [code, count] of e.dropReasons ?? []) dropReasons[dropReasonName(code)] = count;
          edges.push({ id: `${from}->${to}`, from, to, forwarded: e.forwarded, dropped: e.dropped, firstSeen: e.firstSeen, lastSeen: e.lastSeen, dropReasons, ports, otherPorts: e.otherPorts });
        }
      }
    }
    edges.sort((a, b) => cmp(a.id, b.id));
    return { nodeName: this.opts.nodeName, time: now, nodes, edges, flows: this.flowCount, evictedEdges: this.evicted };
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
