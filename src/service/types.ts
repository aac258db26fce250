/**
 * Waggle's service model: what Kubernetes `v1 Service` and
 * `discovery.k8s.io/v1 EndpointSlice` documents are parsed into
 * (src/service/parse.ts). Plain, JSON-serialisable data: the agent persists
 * it and `waggle service get -o json` returns it.
 *
 * Kubernetes defaulting is applied by the parser (protocol TCP, targetPort =
 * port, affinity timeout 10800 s, traffic policies Cluster, endpoint
 * conditions), so consumers never re-derive a default. What needs agent state
 * is left open and says so: a Service without cluster IPs gets them from the
 * service CIDR, a NodePort port without `nodePort` gets one from the node-port
 * range, and `lbAlgorithm` absent means the agent's default.
 */

export type IpFamily = 'IPv4' | 'IPv6';
export type IpFamilyPolicy = 'SingleStack' | 'PreferDualStack' | 'RequireDualStack';
/** Protocols Waggle load-balances (Kubernetes also has SCTP: refused by the parser). */
export type ServiceProtocol = 'TCP' | 'UDP';
/** Service types Waggle handles (LoadBalancer and ExternalName are refused by the parser). */
export type ServiceType = 'ClusterIP' | 'NodePort';
export type TrafficPolicy = 'Cluster' | 'Local';
export type SessionAffinity = 'None' | 'ClientIP';
export type LbAlgorithm = 'random' | 'maglev';

/** Label naming the Service an EndpointSlice belongs to (as Kubernetes sets it). */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Annotation choosing a Service's load-balancing algorithm (`random` or `maglev`). */
export const LB_ALGORITHM_ANNOTATION = 'service.waggle.io/lb-algorithm';
/** Cilium's annotation for the same, accepted as well. */
export const CILIUM_LB_ALGORITHM_ANNOTATION = 'service.cilium.io/lb-algorithm';
/** Prefix of Waggle's own Service annotations (unknown ones are refused, to catch typos). */
export const WAGGLE_SERVICE_ANNOTATION_PREFIX = 'service.waggle.io/';
/** Kubernetes' default ClientIP affinity timeout (3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;
/** Kubernetes' longest ClientIP affinity timeout (1 day). */
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;
/** Kubernetes' default node-port range (`--service-node-port-range`). */
export const DEFAULT_NODE_PORT_RANGE: readonly [number, number] = [30000, 32767];

export interface ServicePort {
  /** A DNS label; "" only when the Service has exactly one port. EndpointSlice ports carry the same name. */
  name: string;
  protocol: ServiceProtocol;
  /** The port on the cluster IP(s). */
  port: number;
  /**
   * The backends' port: a number, or a named port (an IANA service name)
   * that EndpointSlice ports resolve (a slice port with this port's `name`
   * carries the number). Kubernetes' default: `port`.
   */
  targetPort: number | string;
  /**
   * NodePort services: the port on every node address. Absent: a ClusterIP
   * service, or a NodePort service whose port the agent allocates.
   */
  nodePort?: number;
  /** Kubernetes `appProtocol`, kept as given (not used for load balancing). */
  appProtocol?: string;
}

/** A Kubernetes `v1 Service` of type ClusterIP or NodePort. */
export interface ServiceSpec {
  kind: 'Service';
  name: string;
  /** Default "default". */
  namespace: string;
  /** metadata.uid when the document has one. */
  uid?: string;
  labels: Record<string, string>;
  type: ServiceType;
  /** `clusterIP: None`: no virtual IP and no load balancing (clients use the endpoints directly). */
  headless: boolean;
  /**
   * Canonical address text, in `ipFamilies` order (the first is `clusterIP`).
   * Empty for a headless service. Shorter than `ipFamilies` (often empty)
   * when the document gives fewer: the agent allocates the rest from its
   * service CIDR of each remaining family.
   */
  clusterIPs: string[];
  /**
   * Requested families, primary first: `spec.ipFamilies`, else the families
   * of `clusterIPs`, else IPv4; the dual-stack policies add the other
   * family. Under PreferDualStack the agent may drop the second family when
   * it has no service CIDR of it.
   */
  ipFamilies: IpFamily[];
  ipFamilyPolicy: IpFamilyPolicy;
  /** In document order (an index here is the index in `spec.ports`). Empty only for a headless service. */
  ports: ServicePort[];
  /**
   * Labels of the endpoints that back the service when it has no
   * EndpointSlices. Absent when the document has none or an empty one (as in
   * Kubernetes: no automatic endpoints).
   */
  selector?: Record<string, string>;
  sessionAffinity: SessionAffinity;
  /** ClientIP only: 1..86400, default 10800. */
  sessionAffinityTimeoutSeconds?: number;
  /** Traffic to node ports: `Local` sends it only to this node's backends. Always `Cluster` for ClusterIP services. */
  externalTrafficPolicy: TrafficPolicy;
  /** Traffic to the cluster IPs from inside the cluster: `Local` sends it only to this node's backends. */
  internalTrafficPolicy: TrafficPolicy;
  /** Kubernetes `publishNotReadyAddresses`: not-ready endpoints are backends too. */
  publishNotReadyAddresses: boolean;
  /** From the `service.waggle.io/lb-algorithm` (or `service.cilium.io/lb-algorithm`) annotation; absent: the agent's default. */
  lbAlgorithm?: LbAlgorithm;
}

/** EndpointSlice endpoint conditions, with Kubernetes' meaning of an absent condition already applied. */
export interface EndpointConditions {
  /** Absent in the document: true (Kubernetes: "unknown, interpret as ready"). */
  ready: boolean;
  /** Absent: the value of `ready`. */
  serving: boolean;
  /** Absent: false. */
  terminating: boolean;
}

export interface ObjectReference {
  kind?: string;
  namespace?: string;
  name?: string;
  uid?: string;
}

export interface SliceEndpoint {
  /** Canonical address text of the slice's address type; at least one. Kubernetes: consumers may use only the first. */
  addresses: string[];
  conditions: EndpointConditions;
  hostname?: string;
  /** The node the endpoint runs on (traffic policy Local keeps the ones on this node). */
  nodeName?: string;
  zone?: string;
  targetRef?: ObjectReference;
}

export interface SlicePort {
  /** The name of the Service port this is the target of ("" for a Service's single unnamed port). */
  name: string;
  protocol: ServiceProtocol;
  /** The backends' port number. */
  port: number;
  appProtocol?: string;
}

/** A Kubernetes `discovery.k8s.io/v1 EndpointSlice` with an IPv4 or IPv6 address type. */
export interface EndpointSliceSpec {
  kind: 'EndpointSlice';
  name: string;
  /** Default "default". */
  namespace: string;
  uid?: string;
  /** From the `kubernetes.io/service-name` label: the Service (in the same namespace) these are endpoints of. */
  serviceName: string;
  addressType: IpFamily;
  endpoints: SliceEndpoint[];
  ports: SlicePort[];
}

export type ServiceResource = ServiceSpec | EndpointSliceSpec;

/** `Kind/namespace/name`: unique per resource. */
export function serviceResourceKey(r: Pick<ServiceResource, 'kind' | 'namespace' | 'name'>): string {
  return `${r.kind}/${r.namespace}/${r.name}`;
}
