/**
 * The service set of the services benchmark (bench/services.ts) and the same
 * services written three ways: as Waggle's LB desired state (for
 * LbMapWriter.apply), and as the rules kube-proxy writes for them in its
 * iptables mode (iptables-restore input) and in its nftables mode (`nft -f`
 * input). Pure text generation, no I/O.
 *
 * Service s (0-based) of a set of N:
 *   name       bench/svc-s, port name "http" (kube-proxy's servicePortName "bench/svc-s:http")
 *   frontend   VIP 10.199.128.0 + (s + 1), TCP port 80 (all VIPs inside the "service CIDR" 10.199.128.0/17)
 *   backends   10 (by default) endpoints 10.199.99.1 … 10.199.99.10, TCP port 20000 + s: every
 *              service has its own endpoints (100,000 distinct backends for 10,000 services), and the
 *              server namespace of the wire part answers on the ports of the services it measures
 *   Waggle IDs service s + 1, backends s × per + j + 1; random selection (no Maglev, no affinity)
 *
 * The "cluster CIDR" (pod range) is 10.199.0.0/16, so the clients of the wire
 * part count as pods: kube-proxy's masquerade rules are present (and
 * evaluated) but do not match them, as for pod-to-service traffic.
 *
 * kube-proxy's rule shapes (as of Kubernetes 1.31, pkg/proxy/iptables and
 * pkg/proxy/nftables; chain names from the same hashes: base32 of SHA-256):
 *   iptables  nat: PREROUTING/OUTPUT → KUBE-SERVICES: one rule per service port
 *             `-d VIP/32 -p tcp --dport 80 -j KUBE-SVC-<hash>`, last the KUBE-NODEPORTS
 *             rule (`-m addrtype --dst-type LOCAL`); KUBE-SVC-<hash>: the masquerade rule
 *             for sources outside the cluster CIDR, then one `-m statistic --mode random
 *             --probability 1/(n−i)` jump per endpoint to KUBE-SEP-<hash> (the last without
 *             statistic); KUBE-SEP-<hash>: hairpin masquerade and `-j DNAT --to-destination`;
 *             KUBE-MARK-MASQ, KUBE-POSTROUTING (MASQUERADE --random-fully on the mark).
 *             filter: the KUBE-PROXY-FIREWALL / KUBE-SERVICES / KUBE-EXTERNAL-SERVICES /
 *             KUBE-NODEPORTS / KUBE-FORWARD jumps from INPUT, FORWARD and OUTPUT (their chains
 *             stay empty here: every service has endpoints and no firewall).
 *   nftables  table ip kube-proxy: base chains at the filter (−110, output post-DNAT −90) and
 *             nat (−100 / 100) hooks; `services`: `ip daddr . meta l4proto . th dport vmap
 *             @service-ips` (+ the NodePort rule); per service a chain
 *             `service-<hash>-bench/svc-s/tcp/http` with the masquerade rule and
 *             `numgen random mod N vmap { 0 : goto endpoint-…, … }`; per endpoint a chain
 *             with the hairpin masquerade rule and `meta l4proto tcp dnat to IP:PORT`;
 *             the sets/maps cluster-ips, service-ips, no-endpoint-services, firewall-ips,
 *             nodeport-ips, service-nodeports, no-endpoint-nodeports; cluster-ips-check
 *             rejects/drops traffic to unknown ClusterIPs / the service CIDR.
 */
import { createHash } from 'node:crypto';
import type { LbBackendEntry, LbDesiredState, LbFrontend } from '../src/datapath/lb-maps.js';

/** Backends per service. */
export const PER_SERVICE_DEFAULT = 10;
/** The backends' addresses: 10.199.99.1 … (one per backend index). */
export const BACKEND_NET = '10.199.99';
export const SERVICE_CIDR = '10.199.128.0/17';
export const CLUSTER_CIDR = '10.199.0.0/16';
export const SERVICE_PORT = 80;
export const BACKEND_PORT_BASE = 20000;

/** VIP of service s. */
export function vipOf(s: number): string {
  const n = s + 1;
  if (n >= 1 << 15) throw new Error(`service ${s}: outside the service CIDR ${SERVICE_CIDR}`);
  return `10.199.${128 + (n >> 8)}.${n & 255}`;
}

export function backendAddr(j: number): string {
  if (j < 0 || j > 253) throw new Error(`backend index ${j} out of range`);
  return `${BACKEND_NET}.${j + 1}`;
}

export function backendPort(s: number): number {
  if (BACKEND_PORT_BASE + s > 65535) throw new Error(`service ${s}: backend port out of range`);
  return BACKEND_PORT_BASE + s;
}

/** Waggle's desired LB state for services 0..n−1, `per` backends each (random selection). */
export function waggleState(n: number, per = PER_SERVICE_DEFAULT): LbDesiredState {
  const backends: LbBackendEntry[] = [];
  const frontends: LbFrontend[] = [];
  const flags = { maglev: false, affinity: false, nodePort: false, local: false };
  for (let s = 0; s < n; s++) {
    const ids: number[] = [];
    const port = backendPort(s);
    for (let j = 0; j < per; j++) {
      const id = s * per + j + 1;
      backends.push({ id, family: 4, addr: backendAddr(j), port, proto: 'TCP', terminating: false });
      ids.push(id);
    }
    frontends.push({ serviceId: s + 1, family: 4, addr: vipOf(s), port: SERVICE_PORT, proto: 'TCP', flags, affinityTimeout: 0, backends: ids });
  }
  return { frontends, backends };
}

// ---- kube-proxy names ---------------------------------------------------------

const b32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (standard alphabet, as Go's base32.StdEncoding) of `buf`, without padding. */
function base32(buf: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += b32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += b32[(value << (5 - bits)) & 31];
  return out;
}

function hash(text: string, n: number): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, n);
}

const portName = (s: number): string => `bench/svc-${s}:http`;

/** kube-proxy iptables: servicePortChainName = "KUBE-SVC-" + hash(servicePortName + protocol)[:16]. */
export function kubeSvcChain(s: number): string {
  return `KUBE-SVC-${hash(`${portName(s)}tcp`, 16)}`;
}

/** kube-proxy iptables: servicePortEndpointChainName = "KUBE-SEP-" + hash(servicePortName + protocol + endpoint)[:16]. */
export function kubeSepChain(s: number, j: number, addr = backendAddr(j)): string {
  return `KUBE-SEP-${hash(`${portName(s)}tcp${addr}:${backendPort(s)}`, 16)}`;
}

// ---- iptables mode ----------------------------------------------------------------

/** kube-proxy's --probability argument: 1/(n−i) with 10 decimals. */
function probability(n: number, i: number): string {
  return (1 / (n - i)).toFixed(10);
}

/** The iptables-restore input of kube-proxy's iptables mode for services 0..n−1 (a full sync). */
export function kubeIptables(n: number, per = PER_SERVICE_DEFAULT): string {
  const L: string[] = [];
  L.push(
    '*filter',
    ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]',
    ':KUBE-EXTERNAL-SERVICES - [0:0]', ':KUBE-FIREWALL - [0:0]', ':KUBE-FORWARD - [0:0]', ':KUBE-KUBELET-CANARY - [0:0]',
    ':KUBE-NODEPORTS - [0:0]', ':KUBE-PROXY-CANARY - [0:0]', ':KUBE-PROXY-FIREWALL - [0:0]', ':KUBE-SERVICES - [0:0]',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    'COMMIT',
    '*nat',
    ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]',
    ':KUBE-MARK-MASQ - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-SERVICES - [0:0]',
  );
  for (let s = 0; s < n; s++) {
    L.push(`:${kubeSvcChain(s)} - [0:0]`);
    for (let j = 0; j < per; j++) L.push(`:${kubeSepChain(s, j)} - [0:0]`);
  }
  L.push(
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  );
  for (let s = 0; s < n; s++) L.push(iptablesServiceRule(s));
  for (let s = 0; s < n; s++) iptablesServiceChains(L, s, addrsOf(per));
  L.push(IPTABLES_NODEPORTS_RULE, 'COMMIT', '');
  return L.join('\n');
}

const IPTABLES_NODEPORTS_RULE = '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS';

const addrsOf = (per: number): string[] => Array.from({ length: per }, (_, j) => backendAddr(j));

/** Service s's rule in KUBE-SERVICES. */
function iptablesServiceRule(s: number): string {
  return `-A KUBE-SERVICES -d ${vipOf(s)}/32 -p tcp -m comment --comment "${portName(s)} cluster IP" -m tcp --dport ${SERVICE_PORT} -j ${kubeSvcChain(s)}`;
}

/** Service s's KUBE-SVC chain rules, endpoints at `addrs`. */
function iptablesSvcRules(L: string[], s: number, addrs: string[]): void {
  const name = portName(s);
  const svc = kubeSvcChain(s);
  L.push(`-A ${svc} ! -s ${CLUSTER_CIDR} -d ${vipOf(s)}/32 -p tcp -m comment --comment "${name} cluster IP" -m tcp --dport ${SERVICE_PORT} -j KUBE-MARK-MASQ`);
  addrs.forEach((addr, j) => {
    const stat = j < addrs.length - 1 ? ` -m statistic --mode random --probability ${probability(addrs.length, j)}` : '';
    L.push(`-A ${svc} -m comment --comment "${name} -> ${addr}:${backendPort(s)}"${stat} -j ${kubeSepChain(s, j, addr)}`);
  });
}

/** The KUBE-SEP chain rules of endpoint j (at `addr`) of service s. */
function iptablesSepRules(L: string[], s: number, j: number, addr: string): void {
  const sep = kubeSepChain(s, j, addr);
  L.push(`-A ${sep} -s ${addr}/32 -m comment --comment "${portName(s)}" -j KUBE-MARK-MASQ`);
  L.push(`-A ${sep} -p tcp -m comment --comment "${portName(s)}" -m tcp -j DNAT --to-destination ${addr}:${backendPort(s)}`);
}

/** Service s's KUBE-SVC chain and its endpoints' KUBE-SEP chains (rules only). */
function iptablesServiceChains(L: string[], s: number, addrs: string[]): void {
  iptablesSvcRules(L, s, addrs);
  addrs.forEach((addr, j) => iptablesSepRules(L, s, j, addr));
}

/**
 * What kube-proxy's iptables mode restores (`iptables-restore --noflush`) when
 * one endpoint of service s changed, with its partial syncs
 * (MinimizeIPTablesRestore, the default since 1.27): the filter chains it owns,
 * and in nat the chains it always rewrites (KUBE-SERVICES with every service's
 * rule, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ), the changed
 * service's KUBE-SVC chain, the new endpoint's KUBE-SEP chain, and the old
 * endpoint's chain deleted (-X).
 */
export function kubeIptablesChange(n: number, s: number, j: number, newAddr: string, per = PER_SERVICE_DEFAULT): string {
  const addrs = addrsOf(per);
  const oldAddr = addrs[j] as string;
  addrs[j] = newAddr;
  const L: string[] = [
    '*filter',
    ':KUBE-EXTERNAL-SERVICES - [0:0]', ':KUBE-FORWARD - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-PROXY-FIREWALL - [0:0]', ':KUBE-SERVICES - [0:0]',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    'COMMIT',
    '*nat',
    ':KUBE-MARK-MASQ - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-SERVICES - [0:0]',
    `:${kubeSvcChain(s)} - [0:0]`, `:${kubeSepChain(s, j, newAddr)} - [0:0]`, `:${kubeSepChain(s, j, oldAddr)} - [0:0]`,
    '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ];
  for (let k = 0; k < n; k++) L.push(iptablesServiceRule(k));
  L.push(IPTABLES_NODEPORTS_RULE);
  iptablesSvcRules(L, s, addrs);
  iptablesSepRules(L, s, j, newAddr);
  L.push(`-X ${kubeSepChain(s, j, oldAddr)}`, 'COMMIT', '');
  return L.join('\n');
}

/** Rules kube-proxy's iptables input holds for n services (nat + filter), for checking what was loaded. */
export function kubeIptablesNatRuleCount(n: number, per = PER_SERVICE_DEFAULT): number {
  // PREROUTING, OUTPUT, POSTROUTING, KUBE-MARK-MASQ, 3 × KUBE-POSTROUTING, the nodeports rule; per service: 1 + 1 + per + 2·per.
  return 8 + n * (2 + 3 * per);
}

// ---- nftables mode -------------------------------------------------------------------

const NFT_TABLE = 'ip kube-proxy';
const nftPortName = (s: number): string => `bench/svc-${s}/tcp/http`;

/** kube-proxy nftables: servicePortChainName = "service-" + hash(servicePortName + protocol)[:8] + "-" + ns/name/proto/port. */
export function nftSvcChain(s: number): string {
  return `service-${hash(`${portName(s)}tcp`, 8)}-${nftPortName(s)}`;
}

/** kube-proxy nftables: endpoint chain "endpoint-" + hash(…endpoint)[:8] + "-" + ns/name/proto/port + "__" + ip/port. */
export function nftSepChain(s: number, j: number, addr = backendAddr(j)): string {
  return `endpoint-${hash(`${portName(s)}tcp${addr}:${backendPort(s)}`, 8)}-${nftPortName(s)}__${addr}/${backendPort(s)}`;
}

/** The `nft -f` input of kube-proxy's nftables mode for services 0..n−1 (a full sync: one transaction). */
export function kubeNft(n: number, per = PER_SERVICE_DEFAULT): string {
  const T = NFT_TABLE;
  const L: string[] = [
    `add table ${T} { comment "rules for kube-proxy" ; }`,
    `add chain ${T} mark-for-masquerade`,
    `add rule ${T} mark-for-masquerade mark set mark or 0x4000`,
    `add chain ${T} masquerading`,
    `add rule ${T} masquerading mark and 0x4000 == 0 return`,
    `add rule ${T} masquerading mark set mark xor 0x4000`,
    `add rule ${T} masquerading masquerade fully-random`,
    `add chain ${T} services`,
    `add chain ${T} service-endpoints-check`,
    `add chain ${T} filter-prerouting { type filter hook prerouting priority -110 ; }`,
    `add chain ${T} filter-input { type filter hook input priority -110 ; }`,
    `add chain ${T} filter-forward { type filter hook forward priority -110 ; }`,
    `add chain ${T} filter-output { type filter hook output priority -110 ; }`,
    `add chain ${T} filter-output-post-dnat { type filter hook output priority -90 ; }`,
    `add chain ${T} nat-prerouting { type nat hook prerouting priority -100 ; }`,
    `add chain ${T} nat-output { type nat hook output priority -100 ; }`,
    `add chain ${T} nat-postrouting { type nat hook postrouting priority 100 ; }`,
    `add chain ${T} nodeport-endpoints-check`,
    `add chain ${T} cluster-ips-check`,
    `add chain ${T} firewall-check`,
    `add set ${T} cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }`,
    `add set ${T} nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }`,
    `add map ${T} firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }`,
    `add map ${T} no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }`,
    `add map ${T} no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }`,
    `add map ${T} service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`,
    `add map ${T} service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }`,
    `add rule ${T} filter-prerouting ct state new jump firewall-check`,
    `add rule ${T} filter-input ct state new jump nodeport-endpoints-check`,
    `add rule ${T} filter-input ct state new jump service-endpoints-check`,
    `add rule ${T} filter-forward ct state new jump service-endpoints-check`,
    `add rule ${T} filter-forward ct state new jump cluster-ips-check`,
    `add rule ${T} filter-output ct state new jump service-endpoints-check`,
    `add rule ${T} filter-output ct state new jump firewall-check`,
    `add rule ${T} filter-output-post-dnat ct state new jump cluster-ips-check`,
    `add rule ${T} nat-prerouting jump services`,
    `add rule ${T} nat-output jump services`,
    `add rule ${T} nat-postrouting jump masquerading`,
    `add rule ${T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services`,
    `add rule ${T} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports`,
    `add rule ${T} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`,
    `add rule ${T} cluster-ips-check ip daddr { ${SERVICE_CIDR} } drop comment "Drop traffic to unallocated ClusterIPs"`,
    `add rule ${T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips`,
    `add rule ${T} services ip daddr . meta l4proto . th dport vmap @service-ips`,
    `add rule ${T} services fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports`,
  ];
  for (let s = 0; s < n; s++) {
    const svc = nftSvcChain(s);
    const vip = vipOf(s);
    L.push(`add chain ${T} ${svc}`);
    addrsOf(per).forEach((addr, j) => nftEndpointChain(L, s, j, addr, false));
    nftServiceRules(L, s, addrsOf(per));
    L.push(`add element ${T} cluster-ips { ${vip} }`);
    L.push(`add element ${T} service-ips { ${vip} . tcp . ${SERVICE_PORT} : goto ${svc} }`);
  }
  L.push('');
  return L.join('\n');
}


function nftEndpointChain(L: string[], s: number, j: number, addr: string, flush: boolean): void {
  const ep = nftSepChain(s, j, addr);
  L.push(`add chain ${NFT_TABLE} ${ep}`);
  if (flush) L.push(`flush chain ${NFT_TABLE} ${ep}`);
  L.push(`add rule ${NFT_TABLE} ${ep} ip saddr ${addr} jump mark-for-masquerade`);
  L.push(`add rule ${NFT_TABLE} ${ep} meta l4proto tcp dnat to ${addr}:${backendPort(s)}`);
}

function nftServiceRules(L: string[], s: number, addrs: string[]): void {
  const svc = nftSvcChain(s);
  L.push(`add rule ${NFT_TABLE} ${svc} ip daddr ${vipOf(s)} tcp dport ${SERVICE_PORT} ip saddr != ${CLUSTER_CIDR} jump mark-for-masquerade`);
  const arms = addrs.map((addr, j) => `${j} : goto ${nftSepChain(s, j, addr)}`);
  L.push(`add rule ${NFT_TABLE} ${svc} numgen random mod ${addrs.length} vmap { ${arms.join(' , ')} }`);
}

/**
 * The transaction kube-proxy's nftables mode sends (`nft -f -`) when one
 * endpoint of service s changed: the new endpoint's chain (added, flushed,
 * filled), the service chain flushed and rewritten, the old endpoint's chain
 * deleted. The sets and the service-ips map do not change.
 */
export function kubeNftChange(s: number, j: number, newAddr: string, per = PER_SERVICE_DEFAULT): string {
  const addrs = addrsOf(per);
  const oldAddr = addrs[j] as string;
  addrs[j] = newAddr;
  const L: string[] = [];
  nftEndpointChain(L, s, j, newAddr, true);
  L.push(`add chain ${NFT_TABLE} ${nftSvcChain(s)}`, `flush chain ${NFT_TABLE} ${nftSvcChain(s)}`);
  nftServiceRules(L, s, addrs);
  L.push(`delete chain ${NFT_TABLE} ${nftSepChain(s, j, oldAddr)}`, '');
  return L.join('\n');
}
