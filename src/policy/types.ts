/**
 * Waggle's internal policy model: what Kubernetes NetworkPolicy and Cilium
 * (Clusterwide)NetworkPolicy YAML is parsed into (src/policy/parse.ts) and what
 * the resolver (src/policy/resolve.ts) turns into datapath policy entries.
 *
 * Selectors here work on one flat label view per identity (see
 * `identityLabelView`): the endpoint's own labels, plus
 * `io.kubernetes.pod.namespace: NS` and `io.cilium.k8s.namespace.labels.K: V`
 * for each label of its namespace. Kubernetes namespaceSelector and Cilium's
 * namespace labels are both expressed as requirements on those keys, exactly
 * as Cilium does, so one matcher serves every policy kind.
 */

export type Direction = 'ingress' | 'egress';

/** Label key carrying an endpoint's namespace name in the label view. */
export const NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';
/** Prefix of namespace labels in the label view. */
export const NAMESPACE_LABELS_PREFIX = 'io.cilium.k8s.namespace.labels.';
/** The label every namespace carries, as Kubernetes sets it. */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface SelectorRequirement {
  key: string;
  operator: SelectorOperator;
  /** Non-empty for In/NotIn, absent for Exists/DoesNotExist. */
  values?: string[];
}

/**
 * A Kubernetes label selector over the label view. All requirements must hold
 * (matchLabels entries are `In [value]`); an empty selector matches every
 * endpoint identity. Keys carry no source prefix (`k8s:`, `any:` are removed by
 * the parser).
 */
export interface LabelSelector {
  requirements: SelectorRequirement[];
}

/** Cilium entities a rule can name. */
export type Entity = 'world' | 'host' | 'cluster' | 'all' | 'remote-node' | 'health' | 'unmanaged' | 'init' | 'kube-apiserver' | 'ingress';

/** The other side of a rule: who may (or may not) talk to / be talked to. */
export type Peer =
  /** Endpoints whose label view the selector matches. */
  | { kind: 'endpoints'; selector: LabelSelector }
  | { kind: 'entity'; entity: Entity }
  /** Addresses in `cidr` but not in any of `except` (addresses outside the cluster's endpoints, as Cilium does). */
  | { kind: 'cidr'; cidr: string; except: string[] }
  /** Any peer at all (L4-only rules, Kubernetes rules without `from`/`to`). */
  | { kind: 'any' };

export type PortProtocol = 'TCP' | 'UDP' | 'SCTP' | 'ANY';

/** A port or port range; no `port` means every port of the protocol. */
export interface PortRule {
  protocol: PortProtocol;
  port?: number;
  /** Last port of a range (inclusive); only with `port`. */
  endPort?: number;
}

/** An ICMP type (code unrestricted). */
export interface IcmpRule {
  family: 'IPv4' | 'IPv6';
  type: number;
}

/** L7 parts of a rule: parsed and validated, not enforced yet (reported by `apply`). */
export interface L7Rules {
  http?: unknown[];
  dns?: unknown[];
  fqdns?: unknown[];
}

export interface PolicyRule {
  direction: Direction;
  action: 'allow' | 'deny';
  /**
   * Traffic matches when its peer matches any of `peers` AND (when `ports` or
   * `icmps` is non-empty) it matches any of those. An empty `peers` matches
   * nothing (Cilium's empty rule `- {}`: it only turns default deny on).
   */
  peers: Peer[];
  ports: PortRule[];
  icmps: IcmpRule[];
  l7?: L7Rules;
  /** Position of the rule within its policy (0-based, counting ingress, ingressDeny, egress, egressDeny rules in that order across specs). */
  index: number;
}

export type PolicyKind = 'NetworkPolicy' | 'CiliumNetworkPolicy' | 'CiliumClusterwideNetworkPolicy';

export interface Policy {
  kind: PolicyKind;
  name: string;
  /** Absent for CiliumClusterwideNetworkPolicy. */
  namespace?: string;
  /**
   * The endpoints the policy applies to (for namespaced kinds the parser has
   * already added `io.kubernetes.pod.namespace In [namespace]`).
   */
  subjects: LabelSelector[];
  /** Directions in which the policy puts its subjects into default deny. */
  defaultDeny: { ingress: boolean; egress: boolean };
  rules: PolicyRule[];
  /** Human-readable notes on what is parsed but not enforced (L7 rules), one per rule part. */
  notEnforced: string[];
  /** The document as given, for `policy get -o yaml|json`. */
  source: Record<string, unknown>;
}

/** Identity of a policy: kind + namespace + name. */
export function policyKey(p: Pick<Policy, 'kind' | 'namespace' | 'name'>): string {
  return `${p.kind}/${p.namespace ?? ''}/${p.name}`;
}

/** Reserved identities (Cilium's numbers). */
export const ReservedIdentity = {
  unknown: 0,
  host: 1,
  world: 2,
  unmanaged: 3,
  health: 4,
  init: 5,
  'remote-node': 6,
  'kube-apiserver': 7,
  ingress: 8,
} as const;

/** First cluster-local identity; first CIDR identity (node-local). */
export const FIRST_ENDPOINT_IDENTITY = 256;
export const LAST_ENDPOINT_IDENTITY = 65535;
export const FIRST_CIDR_IDENTITY = 16777217;

/** A security identity as the resolver sees it. */
export interface IdentityInfo {
  id: number;
  /** For endpoint identities: the label view (see top of file). Empty for reserved and CIDR identities. */
  labels: Record<string, string>;
  /** For reserved identities: the entity name. */
  reserved?: keyof typeof ReservedIdentity;
  /** For CIDR identities: the prefix. */
  cidr?: string;
}

/** Hubble's / Cilium monitor's policy match types. */
export const PolicyMatchType = { none: 0, l3Only: 1, l3l4: 2, l4Only: 3, all: 4 } as const;

/**
 * One entry of the datapath policy map for one endpoint and direction: traffic
 * with the peer `identity` (0 = any), IP protocol `proto` (0 = any; then the
 * port is ignored) and destination port in the prefix `port/portPrefixLen`
 * (0..16 bits; ICMP: type << 8 with prefix 8). The datapath looks up the
 * peer's identity and identity 0, longest prefix each; deny wins.
 */
export interface PolicyEntry {
  identity: number;
  proto: number;
  port: number;
  portPrefixLen: number;
  deny: boolean;
  matchType: number;
  /** Which rule decided (see RuleRef); 0 for the allow-all of an endpoint without policy. */
  cookie: number;
}

/** A rule of a policy, as a flow names it. */
export interface RuleRef {
  kind: PolicyKind;
  name: string;
  namespace?: string;
  index: number;
}

/** The resolved policy of one endpoint. */
export interface EndpointPolicy {
  endpointId: number;
  ingress: PolicyEntry[];
  egress: PolicyEntry[];
  /** Whether some policy selects the endpoint in that direction (default deny on). */
  enforced: { ingress: boolean; egress: boolean };
}

/** A policy as stored by the agent: a stable number (1..65535) names it in cookies. */
export interface StoredPolicy {
  id: number;
  policy: Policy;
}

/** The cookie of rule `index` of stored policy `policyId`: what the datapath reports for a verdict. */
export function ruleCookie(policyId: number, index: number): number {
  return (policyId * 65536 + (index + 1)) >>> 0;
}

/** The policy number and rule index behind a cookie (undefined for cookie 0: no policy). */
export function decodeCookie(cookie: number): { policyId: number; index: number } | undefined {
  if (cookie === 0) return undefined;
  return { policyId: Math.floor(cookie / 65536), index: (cookie % 65536) - 1 };
}
