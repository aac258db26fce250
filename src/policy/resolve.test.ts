import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cidrContains, parseCidr } from '../ipam/cidr.js';
import { lookupVerdict } from './lookup.js';
import { portRangeToPrefixes } from './ports.js';
import { canonicalPrefix, prepare, referencedCidrs, resolveAll, resolveEndpointPolicy, ruleL4Keys, type ResolveInput, type ResolveSubject } from './resolve.js';
import { identityLabelView, matchesSelector } from './selector.js';
import {
  FIRST_CIDR_IDENTITY,
  NAMESPACE_LABEL,
  NAMESPACE_LABELS_PREFIX,
  PolicyMatchType,
  ReservedIdentity,
  ruleCookie,
  type Direction,
  type Entity,
  type IcmpRule,
  type IdentityInfo,
  type LabelSelector,
  type Peer,
  type Policy,
  type PolicyEntry,
  type PolicyRule,
  type PortRule,
  type StoredPolicy,
} from './types.js';

// ---- fixtures ---------------------------------------------------------------

const NS: Record<string, Record<string, string>> = {
  default: { 'kubernetes.io/metadata.name': 'default', team: 'a' },
  other: { 'kubernetes.io/metadata.name': 'other', team: 'b' },
};

const WEB = 1000;
const DB = 1001;
const CLIENT = 1002;
const FRONTEND = 1003;
const C10 = FIRST_CIDR_IDENTITY; // 10.0.0.0/8
const C10_1 = FIRST_CIDR_IDENTITY + 1; // 10.1.0.0/16
const C192 = FIRST_CIDR_IDENTITY + 2; // 192.168.0.0/16
const C6 = FIRST_CIDR_IDENTITY + 3; // 2001:db8::/32
const C10_1_2 = FIRST_CIDR_IDENTITY + 4; // 10.1.2.0/24

function view(labels: Record<string, string>, ns: string): Record<string, string> {
  return identityLabelView(labels, ns, NS[ns] ?? {});
}

const reserved: IdentityInfo[] = (Object.entries(ReservedIdentity) as [keyof typeof ReservedIdentity, number][])
  .filter(([, id]) => id !== 0)
  .map(([name, id]) => ({ id, labels: {}, reserved: name }));

const endpoints: IdentityInfo[] = [
  { id: WEB, labels: view({ app: 'web' }, 'default') },
  { id: DB, labels: view({ app: 'db' }, 'default') },
  { id: CLIENT, labels: view({ app: 'client' }, 'other') },
  { id: FRONTEND, labels: view({ app: 'frontend', tier: 'edge' }, 'other') },
];

const cidrs: IdentityInfo[] = [
  { id: C10, labels: {}, cidr: '10.0.0.0/8' },
  { id: C10_1, labels: {}, cidr: '10.1.0.0/16' },
  { id: C192, labels: {}, cidr: '192.168.0.0/16' },
  { id: C6, labels: {}, cidr: '2001:db8::/32' },
  { id: C10_1_2, labels: {}, cidr: '10.1.2.0/24' },
];

const identities = [...reserved, ...endpoints, ...cidrs];
const ENDPOINT_IDS = endpoints.map((e) => e.id);
const CIDR_IDS = cidrs.map((c) => c.id);
const ALL_IDS = identities.map((i) => i.id);

function subject(id: number, endpointId = id): ResolveSubject {
  const ident = identities.find((i) => i.id === id);
  assert.ok(ident);
  return { endpointId, identity: id, labels: ident.labels };
}

function match(labels: Record<string, string>, ns?: string): LabelSelector {
  const requirements = Object.entries(labels).map(([key, v]) => ({ key, operator: 'In' as const, values: [v] }));
  if (ns !== undefined) requirements.push({ key: NAMESPACE_LABEL, operator: 'In', values: [ns] });
  return { requirements };
}

const eps = (labels: Record<string, string>, ns?: string): Peer => ({ kind: 'endpoints', selector: match(labels, ns) });
const entity = (e: Entity): Peer => ({ kind: 'entity', entity: e });
const cidr = (c: string, except: string[] = []): Peer => ({ kind: 'cidr', cidr: c, except });
const ANY: Peer = { kind: 'any' };
const tcp = (port?: number, endPort?: number): PortRule => ({ protocol: 'TCP', ...(port !== undefined ? { port } : {}), ...(endPort !== undefined ? { endPort } : {}) });

interface RuleSpec {
  direction?: Direction;
  action?: 'allow' | 'deny';
  peers: Peer[];
  ports?: PortRule[];
  icmps?: IcmpRule[];
}

function policy(
  name: string,
  subjects: LabelSelector[],
  rules: RuleSpec[],
  defaultDeny: { ingress: boolean; egress: boolean } = { ingress: rules.some((r) => (r.direction ?? 'ingress') === 'ingress'), egress: rules.some((r) => r.direction === 'egress') },
  kind: Policy['kind'] = 'CiliumNetworkPolicy',
): Policy {
  return {
    kind,
    name,
    namespace: 'default',
    subjects,
    defaultDeny,
    rules: rules.map(
      (r, index): PolicyRule => ({ direction: r.direction ?? 'ingress', action: r.action ?? 'allow', peers: r.peers, ports: r.ports ?? [], icmps: r.icmps ?? [], index }),
    ),
    notEnforced: [],
    source: {},
  };
}

function input(...policies: Policy[]): ResolveInput {
  return { policies: policies.map((p, i): StoredPolicy => ({ id: i + 1, policy: p })), identities };
}

function entry(identity: number, proto: number, port: number, portPrefixLen: number, deny: boolean, cookie: number, matchType?: number): PolicyEntry {
  const mt =
    matchType ?? (identity !== 0 ? (proto === 0 ? PolicyMatchType.l3Only : PolicyMatchType.l3l4) : proto === 0 ? PolicyMatchType.all : PolicyMatchType.l4Only);
  return { identity, proto, port, portPrefixLen, deny, matchType: mt, cookie };
}

const ALLOW_ALL = entry(0, 0, 0, 0, false, 0, PolicyMatchType.all);
const webSel = match({ app: 'web' }, 'default');

/** Identities of the entries (sorted, distinct). */
function idsOf(entries: PolicyEntry[]): number[] {
  return [...new Set(entries.map((e) => e.identity))].sort((a, b) => a - b);
}

// ---- Kubernetes idioms --------------------------------------------------------

test('default deny: empty podSelector, policyTypes [Ingress], no rules', () => {
  const p = policy('default-deny', [{ requirements: [{ key: NAMESPACE_LABEL, operator: 'In', values: ['default'] }] }], [], { ingress: true, egress: false }, 'NetworkPolicy');
  for (const id of [WEB, DB]) {
    const r = resolveEndpointPolicy(input(p), subject(id));
    assert.deepEqual(r.enforced, { ingress: true, egress: false });
    assert.deepEqual(r.ingress, []);
    assert.deepEqual(r.egress, [ALLOW_ALL]);
    for (const peer of [WEB, CLIENT, ReservedIdentity.world, ReservedIdentity.host, C10]) {
      const v = lookupVerdict(r.ingress, peer, 6, 80);
      assert.equal(v.verdict, 'denied');
      assert.equal(v.reason, 'no-rule');
      assert.equal(v.cookie, 0);
    }
    assert.equal(lookupVerdict(r.egress, CLIENT, 17, 53).verdict, 'allowed');
  }
  const client = resolveEndpointPolicy(input(p), subject(CLIENT));
  assert.deepEqual(client.enforced, { ingress: false, egress: false }, 'the policy is namespaced to default');
});

test('allow-all idiom: ingress [{}] is a wildcard allow', () => {
  const p = policy('allow-all', [match({}, 'default')], [{ peers: [ANY] }], { ingress: true, egress: false }, 'NetworkPolicy');
  const r = resolveEndpointPolicy(input(p), subject(WEB));
  assert.deepEqual(r.ingress, [entry(0, 0, 0, 0, false, ruleCookie(1, 0), PolicyMatchType.all)]);
  assert.equal(r.enforced.ingress, true);
  const v = lookupVerdict(r.ingress, CLIENT, 17, 5353);
  assert.deepEqual([v.verdict, v.cookie, v.matchType], ['allowed', ruleCookie(1, 0), PolicyMatchType.all]);
  assert.equal(lookupVerdict(r.ingress, ReservedIdentity.world, 1, 8 << 8).verdict, 'allowed');
});

test('allow by label on a port', () => {
  const p = policy('web', [webSel], [{ peers: [eps({ app: 'client' })], ports: [tcp(80)] }]);
  const r = resolveEndpointPolicy(input(p), subject(WEB));
  assert.deepEqual(r.ingress, [entry(CLIENT, 6, 80, 16, false, ruleCookie(1, 0))]);
  assert.equal(r.ingress[0]?.matchType, PolicyMatchType.l3l4);
  assert.equal(lookupVerdict(r.ingress, CLIENT, 6, 80).verdict, 'allowed');
  assert.equal(lookupVerdict(r.ingress, CLIENT, 6, 81).verdict, 'denied');
  assert.equal(lookupVerdict(r.ingress, CLIENT, 17, 80).verdict, 'denied');
  assert.equal(lookupVerdict(r.ingress, DB, 6, 80).verdict, 'denied');
  assert.equal(lookupVerdict(r.ingress, FRONTEND, 6, 80).verdict, 'denied');
});

test('L3-only allow and empty selector in a peer', () => {
  const p = policy('web', [webSel], [{ peers: [eps({}, 'default')] }]);
  const r = resolveEndpointPolicy(input(p), subject(WEB));
  assert.deepEqual(r.ingress, [entry(WEB, 0, 0, 0, false, ruleCookie(1, 0)), entry(DB, 0, 0, 0, false, ruleCookie(1, 0))]);
  assert.equal(r.ingress[0]?.matchType, PolicyMatchType.l3Only);
  const everyone = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [{ kind: 'endpoints', selector: { requirements: [] } }] }])), subject(WEB));
  assert.deepEqual(idsOf(everyone.ingress), ENDPOINT_IDS, 'an empty selector selects endpoint identities only');
});

test('namespace selector via namespace labels', () => {
  const nsPeer: Peer = { kind: 'endpoints', selector: { requirements: [{ key: `${NAMESPACE_LABELS_PREFIX}team`, operator: 'In', values: ['b'] }] } };
  const r = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [nsPeer], ports: [tcp(443)] }])), subject(WEB));
  assert.deepEqual(idsOf(r.ingress), [CLIENT, FRONTEND]);
  const both: Peer = { kind: 'endpoints', selector: { requirements: [...nsPeer.selector.requirements, { key: 'tier', operator: 'Exists' }] } };
  const r2 = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [both] }])), subject(WEB));
  assert.deepEqual(idsOf(r2.ingress), [FRONTEND], 'namespaceSelector AND podSelector');
});

test('ipBlock with except: the except prefix identity is not selected', () => {
  const r = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [cidr('10.0.0.0/8', ['10.1.0.0/16'])], ports: [tcp(443)] }])), subject(WEB));
  assert.deepEqual(idsOf(r.ingress), [C10]);
  assert.equal(lookupVerdict(r.ingress, C10, 6, 443).verdict, 'allowed');
  assert.equal(lookupVerdict(r.ingress, C10_1, 6, 443).verdict, 'denied');
  assert.equal(lookupVerdict(r.ingress, C10_1_2, 6, 443).verdict, 'denied', 'prefixes inside the except are excluded too');
  assert.equal(lookupVerdict(r.ingress, ReservedIdentity.world, 6, 443).verdict, 'denied');

  const world = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [cidr('0.0.0.0/0', ['10.0.0.0/8'])] }])), subject(WEB));
  assert.deepEqual(idsOf(world.ingress), [ReservedIdentity.world, C192], '/0 adds world; v6 identities are another family');

  const v6 = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [cidr('2001:db8::/16')] }])), subject(WEB));
  assert.deepEqual(idsOf(v6.ingress), [C6]);

  const inner = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [cidr('10.1.0.0/16')] }])), subject(WEB));
  assert.deepEqual(idsOf(inner.ingress), [C10_1, C10_1_2], 'a shorter identity prefix is not inside a longer rule prefix');

  const notCanonical = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [cidr('10.1.2.3/24')] }])), subject(WEB));
  assert.deepEqual(idsOf(notCanonical.ingress), [C10_1_2], 'host bits are cleared');
  const bogus = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [cidr('nonsense')] }])), subject(WEB));
  assert.deepEqual(bogus.ingress, [], 'an unparsable CIDR selects nothing');
});

test('port ranges become prefixes', () => {
  const r = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [eps({ app: 'client' })], ports: [tcp(1000, 2000)] }])), subject(WEB));
  const prefixes = portRangeToPrefixes(1000, 2000);
  assert.deepEqual(
    r.ingress,
    prefixes.map((p) => entry(CLIENT, 6, p.port, p.prefixLen, false, ruleCookie(1, 0))),
  );
  for (const [port, ok] of [[999, false], [1000, true], [1500, true], [2000, true], [2001, false]] as const) {
    assert.equal(lookupVerdict(r.ingress, CLIENT, 6, port).verdict === 'allowed', ok, `port ${port}`);
  }
});

test('protocols: ANY, SCTP, no port, port 0', () => {
  assert.deepEqual(ruleL4Keys({ ports: [{ protocol: 'ANY', port: 53 }], icmps: [] }), [
    { proto: 6, port: 53, prefixLen: 16 },
    { proto: 17, port: 53, prefixLen: 16 },
    { proto: 132, port: 53, prefixLen: 16 },
  ]);
  assert.deepEqual(ruleL4Keys({ ports: [{ protocol: 'SCTP' }], icmps: [] }), [{ proto: 132, port: 0, prefixLen: 0 }]);
  assert.deepEqual(ruleL4Keys({ ports: [{ protocol: 'UDP', port: 0 }], icmps: [] }), [{ proto: 17, port: 0, prefixLen: 0 }]);
  assert.deepEqual(ruleL4Keys({ ports: [], icmps: [] }), [{ proto: 0, port: 0, prefixLen: 0 }]);
  assert.deepEqual(ruleL4Keys({ ports: [tcp(80), tcp(80)], icmps: [] }), [{ proto: 6, port: 80, prefixLen: 16 }], 'duplicates collapse');
  const r = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [ANY], ports: [{ protocol: 'TCP' }] }])), subject(WEB));
  assert.deepEqual(r.ingress, [entry(0, 6, 0, 0, false, ruleCookie(1, 0), PolicyMatchType.l4Only)]);
  assert.equal(lookupVerdict(r.ingress, CLIENT, 6, 12345).verdict, 'allowed');
  assert.equal(lookupVerdict(r.ingress, CLIENT, 17, 12345).verdict, 'denied');
});

test('ICMP rules', () => {
  const p = policy('web', [webSel], [
    { peers: [eps({ app: 'client' })], icmps: [{ family: 'IPv4', type: 8 }, { family: 'IPv6', type: 128 }] },
  ]);
  const r = resolveEndpointPolicy(input(p), subject(WEB));
  assert.deepEqual(r.ingress, [entry(CLIENT, 1, 8 << 8, 8, false, ruleCookie(1, 0)), entry(CLIENT, 58, 128 << 8, 8, false, ruleCookie(1, 0))]);
  assert.equal(lookupVerdict(r.ingress, CLIENT, 1, (8 << 8) | 0).verdict, 'allowed');
  assert.equal(lookupVerdict(r.ingress, CLIENT, 1, 0).verdict, 'denied', 'echo reply is another type');
  assert.equal(lookupVerdict(r.ingress, CLIENT, 58, 128 << 8).verdict, 'allowed');
  assert.equal(lookupVerdict(r.ingress, CLIENT, 6, 8 << 8).verdict, 'denied');
  const mixed = ruleL4Keys({ ports: [tcp(22)], icmps: [{ family: 'IPv4', type: 0 }] });
  assert.deepEqual(mixed, [{ proto: 6, port: 22, prefixLen: 16 }, { proto: 1, port: 0, prefixLen: 8 }]);
});

test('entities', () => {
  const resolveEntity = (e: Entity): PolicyEntry[] => resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [entity(e)] }])), subject(WEB)).ingress;
  assert.deepEqual(idsOf(resolveEntity('world')), [ReservedIdentity.world, ...CIDR_IDS]);
  assert.deepEqual(idsOf(resolveEntity('cluster')), [1, 3, 4, 5, 6, 7, 8, ...ENDPOINT_IDS]);
  assert.deepEqual(idsOf(resolveEntity('host')), [1]);
  assert.deepEqual(idsOf(resolveEntity('remote-node')), [6]);
  assert.deepEqual(idsOf(resolveEntity('health')), [4]);
  assert.deepEqual(idsOf(resolveEntity('unmanaged')), [3]);
  assert.deepEqual(idsOf(resolveEntity('init')), [5]);
  assert.deepEqual(idsOf(resolveEntity('kube-apiserver')), [7]);
  assert.deepEqual(idsOf(resolveEntity('ingress')), [8]);
  assert.deepEqual(resolveEntity('all'), [entry(0, 0, 0, 0, false, ruleCookie(1, 0), PolicyMatchType.all)]);
  const hostOnly = resolveEntity('host');
  assert.equal(lookupVerdict(hostOnly, 1, 6, 22).verdict, 'allowed');
  assert.equal(lookupVerdict(hostOnly, 6, 6, 22).verdict, 'denied');
});

test('peers of one rule are unioned; an empty peer list matches nothing', () => {
  const r = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [entity('host'), eps({ app: 'db' }), eps({ app: 'db' })], ports: [tcp(5432)] }])), subject(WEB));
  assert.deepEqual(idsOf(r.ingress), [1, DB]);
  assert.equal(r.ingress.length, 2, 'no duplicate entries');
  const empty = resolveEndpointPolicy(input(policy('web', [webSel], [{ peers: [] }], { ingress: true, egress: false })), subject(WEB));
  assert.deepEqual(empty.ingress, []);
  assert.equal(empty.enforced.ingress, true);
});

test('a policy not selecting the subject contributes nothing', () => {
  const p = policy('db', [match({ app: 'db' }, 'default')], [{ peers: [entity('host')], action: 'deny' }, { direction: 'egress', peers: [entity('world')] }]);
  const r = resolveEndpointPolicy(input(p), subject(WEB));
  assert.deepEqual(r, { endpointId: WEB, ingress: [ALLOW_ALL], egress: [ALLOW_ALL], enforced: { ingress: false, egress: false } });
  const noSubjects = { ...p, subjects: [] };
  assert.deepEqual(resolveEndpointPolicy(input(noSubjects), subject(DB)).enforced, { ingress: false, egress: false });
  const selected = resolveEndpointPolicy(input(p), subject(DB));
  assert.deepEqual(selected.enforced, { ingress: true, egress: true });
});

test('unselected endpoint: allow-all both ways', () => {
  const r = resolveEndpointPolicy(input(), subject(CLIENT, 42));
  assert.equal(r.endpointId, 42);
  assert.deepEqual(r.ingress, [ALLOW_ALL]);
  assert.deepEqual(r.egress, [ALLOW_ALL]);
  const v = lookupVerdict(r.egress, ReservedIdentity.world, 17, 53);
  assert.deepEqual([v.verdict, v.cookie, v.matchType], ['allowed', 0, PolicyMatchType.all]);
});

test('egress rules fill the egress map only', () => {
  const p = policy('web', [webSel], [{ direction: 'egress', peers: [eps({ app: 'db' })], ports: [tcp(5432)] }]);
  const r = resolveEndpointPolicy(input(p), subject(WEB));
  assert.deepEqual(r.enforced, { ingress: false, egress: true });
  assert.deepEqual(r.egress, [entry(DB, 6, 5432, 16, false, ruleCookie(1, 0))]);
  assert.deepEqual(r.ingress, [ALLOW_ALL]);
});

// ---- deny ------------------------------------------------------------------------

test('deny beats allow on the same key; among allows the lowest cookie is kept', () => {
  const allow = policy('allow', [webSel], [{ peers: [eps({ app: 'client' })], ports: [tcp(80)] }]);
  const deny = policy('deny', [webSel], [{ action: 'deny', peers: [eps({ app: 'client' })], ports: [tcp(80)] }]);
  for (const order of [[allow, deny], [deny, allow]]) {
    const inp = input(...order);
    const denyId = inp.policies.find((s) => s.policy.name === 'deny')!.id;
    const r = resolveEndpointPolicy(inp, subject(WEB));
    assert.deepEqual(r.ingress, [entry(CLIENT, 6, 80, 16, true, ruleCookie(denyId, 0))]);
  }
  const twice = policy('two', [webSel], [{ peers: [eps({ app: 'client' })], ports: [tcp(80)] }, { peers: [eps({ app: 'client' })], ports: [tcp(80)] }]);
  const r = resolveEndpointPolicy(input(allow, twice), subject(WEB));
  assert.deepEqual(r.ingress, [entry(CLIENT, 6, 80, 16, false, ruleCookie(1, 0))]);
});

test('deny covering a more specific allow of the same identity turns it into a deny', () => {
  const allow = policy('allow', [webSel], [{ peers: [eps({ app: 'client' })], ports: [tcp(80), tcp(8080)] }]);
  // deny every TCP port
  const denyTcp = policy('deny-tcp', [webSel], [{ action: 'deny', peers: [eps({ app: 'client' })], ports: [{ protocol: 'TCP' }] }]);
  const r = resolveEndpointPolicy(input(allow, denyTcp), subject(WEB));
  const dc = ruleCookie(2, 0);
  assert.deepEqual(r.ingress, [entry(CLIENT, 6, 0, 0, true, dc), entry(CLIENT, 6, 80, 16, true, dc), entry(CLIENT, 6, 8080, 16, true, dc)]);
  for (const port of [80, 8080, 9]) assert.deepEqual([lookupVerdict(r.ingress, CLIENT, 6, port).verdict, lookupVerdict(r.ingress, CLIENT, 6, port).cookie], ['denied', dc]);

  // deny every protocol (L3 deny)
  const denyAll = policy('deny-all', [webSel], [{ action: 'deny', peers: [eps({ app: 'client' })] }]);
  const r2 = resolveEndpointPolicy(input(allow, denyAll), subject(WEB));
  assert.ok(r2.ingress.every((e) => e.deny && e.cookie === ruleCookie(2, 0) && e.matchType === PolicyMatchType.l3Only));
  assert.equal(lookupVerdict(r2.ingress, CLIENT, 6, 80).verdict, 'denied');

  // deny a range: the allow inside it is denied, the one outside stays
  const denyLow = policy('deny-low', [webSel], [{ action: 'deny', peers: [eps({ app: 'client' })], ports: [tcp(0, 1023)] }]);
  const r3 = resolveEndpointPolicy(input(allow, denyLow), subject(WEB));
  assert.deepEqual(r3.ingress.find((e) => e.port === 80), entry(CLIENT, 6, 80, 16, true, ruleCookie(2, 0)));
  assert.deepEqual(r3.ingress.find((e) => e.port === 8080), entry(CLIENT, 6, 8080, 16, false, ruleCookie(1, 0)));
  assert.equal(lookupVerdict(r3.ingress, CLIENT, 6, 80).verdict, 'denied');
  assert.equal(lookupVerdict(r3.ingress, CLIENT, 6, 8080).verdict, 'allowed');
  assert.equal(lookupVerdict(r3.ingress, CLIENT, 6, 443).verdict, 'denied');

  // a deny of another protocol covers nothing
  const denyUdp = policy('deny-udp', [webSel], [{ action: 'deny', peers: [eps({ app: 'client' })], ports: [{ protocol: 'UDP' }] }]);
  const r4 = resolveEndpointPolicy(input(allow, denyUdp), subject(WEB));
  assert.equal(lookupVerdict(r4.ingress, CLIENT, 6, 80).verdict, 'allowed');
  assert.equal(lookupVerdict(r4.ingress, CLIENT, 17, 80).verdict, 'denied');
});

test('nested denies: the most specific covering deny names the converted allow', () => {
  const allow = policy('allow', [webSel], [{ peers: [eps({ app: 'client' })], ports: [tcp(80)] }]);
  const deny = policy('deny', [webSel], [
    { action: 'deny', peers: [eps({ app: 'client' })] },
    { action: 'deny', peers: [eps({ app: 'client' })], ports: [tcp(64, 127)] },
  ]);
  const r = resolveEndpointPolicy(input(allow, deny), subject(WEB));
  const e80 = r.ingress.find((e) => e.proto === 6 && e.port === 80 && e.portPrefixLen === 16);
  assert.deepEqual(e80, entry(CLIENT, 6, 80, 16, true, ruleCookie(2, 1)));
  assert.equal(lookupVerdict(r.ingress, CLIENT, 6, 80).cookie, ruleCookie(2, 1));
});

test('a broader allow does not hide a narrower deny', () => {
  const allow = policy('allow', [webSel], [{ peers: [eps({ app: 'client' })] }]);
  const deny = policy('deny', [webSel], [{ action: 'deny', peers: [eps({ app: 'client' })], ports: [tcp(22)] }]);
  const r = resolveEndpointPolicy(input(allow, deny), subject(WEB));
  assert.deepEqual(r.ingress, [entry(CLIENT, 0, 0, 0, false, ruleCookie(1, 0)), entry(CLIENT, 6, 22, 16, true, ruleCookie(2, 0))]);
  assert.equal(lookupVerdict(r.ingress, CLIENT, 6, 22).verdict, 'denied');
  assert.equal(lookupVerdict(r.ingress, CLIENT, 6, 23).verdict, 'allowed');
});

test('identity-0 deny overrides a specific identity allow through the second lookup', () => {
  const allow = policy('allow', [webSel], [{ peers: [eps({ app: 'client' })], ports: [tcp(22)] }]);
  const deny = policy('deny', [webSel], [{ action: 'deny', peers: [ANY], ports: [tcp(22)] }]);
  const r = resolveEndpointPolicy(input(allow, deny), subject(WEB));
  assert.deepEqual(r.ingress, [entry(0, 6, 22, 16, true, ruleCookie(2, 0), PolicyMatchType.l4Only), entry(CLIENT, 6, 22, 16, false, ruleCookie(1, 0))]);
  const v = lookupVerdict(r.ingress, CLIENT, 6, 22);
  assert.deepEqual([v.verdict, v.reason, v.cookie, v.matchType], ['denied', 'deny-rule', ruleCookie(2, 0), PolicyMatchType.l4Only]);
  // an identity-0 allow covered by an identity-0 deny is converted
  const anyAllow = policy('any', [webSel], [{ peers: [ANY], ports: [tcp(22)] }]);
  const denyAllTcp = policy('deny', [webSel], [{ action: 'deny', peers: [entity('all')], ports: [{ protocol: 'TCP' }] }]);
  const r2 = resolveEndpointPolicy(input(anyAllow, denyAllTcp), subject(WEB));
  assert.ok(r2.ingress.every((e) => e.deny));
});

test('deny rules without default deny: allow-all plus the deny; a deny on the allow-all key stays', () => {
  const p = policy('deny-world', [webSel], [{ direction: 'egress', action: 'deny', peers: [entity('world')] }], { ingress: false, egress: false });
  const r = resolveEndpointPolicy(input(p), subject(WEB));
  assert.equal(r.enforced.egress, false);
  assert.deepEqual(r.egress[0], ALLOW_ALL);
  assert.equal(lookupVerdict(r.egress, ReservedIdentity.world, 6, 443).verdict, 'denied');
  assert.equal(lookupVerdict(r.egress, C192, 6, 443).verdict, 'denied');
  assert.equal(lookupVerdict(r.egress, DB, 6, 443).verdict, 'allowed');

  const all = policy('deny-all', [webSel], [{ action: 'deny', peers: [entity('all')] }], { ingress: false, egress: false });
  const r2 = resolveEndpointPolicy(input(all), subject(WEB));
  assert.deepEqual(r2.ingress, [entry(0, 0, 0, 0, true, ruleCookie(1, 0), PolicyMatchType.all)]);
  assert.equal(lookupVerdict(r2.ingress, DB, 6, 80).verdict, 'denied');
});

// ---- API -------------------------------------------------------------------------

test('match types', () => {
  const p = policy('mt', [webSel], [
    { peers: [eps({ app: 'db' })] },
    { peers: [eps({ app: 'client' })], ports: [tcp(1)] },
    { peers: [ANY], ports: [tcp(2)] },
    { peers: [ANY] },
  ]);
  const r = resolveEndpointPolicy(input(p), subject(WEB));
  const mt = (id: number): number | undefined => r.ingress.find((e) => e.identity === id && (id !== 0 || e.proto === 6))?.matchType;
  assert.equal(mt(DB), PolicyMatchType.l3Only);
  assert.equal(mt(CLIENT), PolicyMatchType.l3l4);
  assert.equal(mt(0), PolicyMatchType.l4Only);
  assert.equal(r.ingress.find((e) => e.identity === 0 && e.proto === 0)?.matchType, PolicyMatchType.all);
});

test('output is sorted and independent of policy order', () => {
  const a = policy('a', [webSel], [{ peers: [entity('cluster')], ports: [tcp(9000, 9100)] }, { peers: [entity('world')], ports: [tcp(443)], action: 'deny' }]);
  const b = policy('b', [webSel], [{ peers: [cidr('0.0.0.0/0')], ports: [tcp(443), { protocol: 'UDP', port: 53 }] }]);
  const r1 = resolveEndpointPolicy({ policies: [{ id: 1, policy: a }, { id: 2, policy: b }], identities }, subject(WEB));
  const r2 = resolveEndpointPolicy({ policies: [{ id: 2, policy: b }, { id: 1, policy: a }], identities: [...identities].reverse() }, subject(WEB));
  assert.deepEqual(r1, r2);
  for (let i = 1; i < r1.ingress.length; i++) {
    const x = r1.ingress[i - 1]!;
    const y = r1.ingress[i]!;
    const cmp = x.identity - y.identity || x.proto - y.proto || x.port - y.port || x.portPrefixLen - y.portPrefixLen;
    assert.ok(cmp < 0, `entries ${i - 1} and ${i} are ordered and distinct`);
  }
});

test('referencedCidrs: canonical, distinct, sorted, with except prefixes', () => {
  const p = policy('c', [webSel], [
    { peers: [cidr('10.1.2.3/16', ['10.1.2.0/24']), cidr('2001:DB8::/32')] },
    { peers: [cidr('10.1.0.0/16'), cidr('0.0.0.0/0', ['192.168.0.0/16']), cidr('bogus'), eps({})], direction: 'egress' },
    { peers: [cidr('1.2.3.4')] },
  ]);
  assert.deepEqual(referencedCidrs([p]), ['0.0.0.0/0', '1.2.3.4/32', '10.1.0.0/16', '10.1.2.0/24', '192.168.0.0/16', '2001:db8::/32']);
  assert.deepEqual(referencedCidrs([]), []);
  assert.equal(canonicalPrefix('10.0.0.1/8')?.text, '10.0.0.0/8');
  assert.equal(canonicalPrefix('10.0.0.0/33'), undefined);
});

test('resolveAll, prepared input and returned entries are independent copies', () => {
  const p = policy('web', [match({}, 'default')], [{ peers: [eps({ app: 'client' })], ports: [tcp(80)] }]);
  const inp = input(p);
  const subjects = [subject(WEB, 1), subject(DB, 2), subject(CLIENT, 3)];
  const all = resolveAll(inp, subjects);
  assert.deepEqual([...all.keys()], [1, 2, 3]);
  const prepared = prepare(inp);
  for (const s of subjects) {
    assert.deepEqual(all.get(s.endpointId), resolveEndpointPolicy(inp, s));
    assert.deepEqual(resolveEndpointPolicy(prepared, s), resolveEndpointPolicy(inp, s));
  }
  all.get(1)!.ingress[0]!.deny = true;
  assert.equal(all.get(2)!.ingress[0]!.deny, false, 'endpoints with the same policy do not share entry objects');
  assert.equal(resolveEndpointPolicy(prepared, subject(WEB)).ingress[0]!.deny, false);
  assert.deepEqual(all.get(3)!.ingress, [ALLOW_ALL]);
});

// ---- randomized comparison with a direct evaluation of the policies ------------------

function inside(inner: string, outer: string): boolean {
  const i = parseCidr(inner);
  const o = parseCidr(outer);
  return i.family === o.family && i.prefix >= o.prefix && cidrContains(o, i.family, i.base);
}

/** Does `peer` select identity `id`? Written from the semantics, not the resolver. */
function peerSelects(peer: Peer, id: number): boolean {
  const ident = identities.find((x) => x.id === id)!;
  const isEndpoint = ident.reserved === undefined && ident.cidr === undefined;
  switch (peer.kind) {
    case 'any':
      return true;
    case 'endpoints':
      return isEndpoint && matchesSelector(peer.selector, ident.labels);
    case 'cidr':
      if (id === ReservedIdentity.world) return parseCidr(peer.cidr).prefix === 0;
      return ident.cidr !== undefined && inside(ident.cidr, peer.cidr) && !peer.except.some((x) => inside(ident.cidr!, x));
    case 'entity':
      if (peer.entity === 'all') return true;
      if (peer.entity === 'world') return id === ReservedIdentity.world || ident.cidr !== undefined;
      if (peer.entity === 'cluster') return isEndpoint || (ident.reserved !== undefined && id !== ReservedIdentity.world);
      return ident.reserved === peer.entity;
  }
}

function l4Matches(rule: PolicyRule, proto: number, port: number): boolean {
  if (rule.ports.length === 0 && rule.icmps.length === 0) return true;
  for (const pr of rule.ports) {
    const protos = { TCP: [6], UDP: [17], SCTP: [132], ANY: [6, 17, 132] }[pr.protocol];
    if (!protos.includes(proto)) continue;
    if (pr.port === undefined || (pr.port === 0 && !pr.endPort)) return true;
    if (port >= pr.port && port <= Math.max(pr.port, pr.endPort ?? pr.port)) return true;
  }
  for (const ic of rule.icmps) if (proto === (ic.family === 'IPv4' ? 1 : 58) && port >> 8 === ic.type) return true;
  return false;
}

test('random policies: lookupVerdict on resolved entries equals direct evaluation', () => {
  let seed = 2024;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return Math.floor((seed / 4294967296) * n);
  };
  const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)]!;
  const peerPool: Peer[] = [
    ANY,
    eps({ app: 'web' }),
    eps({ app: 'client' }),
    eps({}, 'default'),
    { kind: 'endpoints', selector: { requirements: [{ key: 'app', operator: 'NotIn', values: ['web', 'db'] }] } },
    { kind: 'endpoints', selector: { requirements: [{ key: 'tier', operator: 'DoesNotExist' }] } },
    { kind: 'endpoints', selector: { requirements: [{ key: `${NAMESPACE_LABELS_PREFIX}team`, operator: 'In', values: ['b'] }] } },
    ...(['world', 'host', 'cluster', 'all', 'remote-node', 'health', 'unmanaged', 'init', 'kube-apiserver', 'ingress'] as Entity[]).map(entity),
    cidr('10.0.0.0/8'),
    cidr('10.0.0.0/8', ['10.1.0.0/16']),
    cidr('10.1.0.0/16', ['10.1.2.0/24']),
    cidr('0.0.0.0/0', ['10.0.0.0/8']),
    cidr('0.0.0.0/0'),
    cidr('::/0'),
    cidr('192.168.0.0/16'),
  ];
  const portPool: PortRule[] = [
    tcp(80), tcp(443), tcp(), tcp(0), tcp(1, 1023), tcp(1000, 2000), tcp(64, 127), tcp(8080, 8090),
    { protocol: 'UDP', port: 53 }, { protocol: 'UDP' }, { protocol: 'ANY', port: 80 }, { protocol: 'ANY', port: 1024, endPort: 65535 }, { protocol: 'SCTP', port: 80 },
  ];
  const icmpPool: IcmpRule[] = [{ family: 'IPv4', type: 8 }, { family: 'IPv4', type: 0 }, { family: 'IPv6', type: 128 }];
  const subjectPool = [match({ app: 'web' }), match({}, 'default'), match({}), { requirements: [{ key: 'tier', operator: 'Exists' as const }] }, match({ app: 'client' })];
  const protoPorts: [number, number][] = [];
  for (const port of [0, 1, 22, 53, 63, 64, 79, 80, 81, 127, 128, 443, 999, 1000, 1023, 1024, 2000, 2001, 8080, 8091, 65535]) {
    for (const proto of [6, 17, 132]) protoPorts.push([proto, port]);
  }
  for (const t of [0, 8, 128, 3]) for (const proto of [1, 58]) protoPorts.push([proto, (t << 8) | 3]);
  protoPorts.push([47, 0]);

  let checked = 0;
  for (let round = 0; round < 30; round++) {
    const policies: Policy[] = [];
    const npol = 1 + rand(4);
    for (let pi = 0; pi < npol; pi++) {
      const rules: RuleSpec[] = [];
      const nrules = rand(5);
      for (let ri = 0; ri < nrules; ri++) {
        const peers = Array.from({ length: rand(3) + (rand(8) === 0 ? 0 : 1) }, () => pick(peerPool));
        const ports = rand(3) === 0 ? [] : Array.from({ length: 1 + rand(2) }, () => pick(portPool));
        const icmps = rand(4) === 0 ? [pick(icmpPool)] : [];
        rules.push({ direction: rand(2) ? 'ingress' : 'egress', action: rand(3) === 0 ? 'deny' : 'allow', peers, ports, icmps });
      }
      policies.push(policy(`p${pi}`, [pick(subjectPool)], rules, { ingress: rand(3) > 0, egress: rand(2) > 0 }));
    }
    const inp = input(...policies);
    const prepared = prepare(inp);
    for (const ep of ENDPOINT_IDS) {
      const resolved = resolveEndpointPolicy(prepared, subject(ep));
      const applicable = inp.policies.filter((s) => s.policy.subjects.some((sel) => matchesSelector(sel, subject(ep).labels)));
      for (const dir of ['ingress', 'egress'] as const) {
        const enforced = applicable.some((s) => s.policy.defaultDeny[dir]);
        assert.equal(resolved.enforced[dir], enforced);
        const entries = resolved[dir];
        for (const peerId of ALL_IDS) {
          for (const [proto, port] of protoPorts) {
            const denyCookies = new Set<number>();
            const allowCookies = new Set<number>();
            for (const s of applicable) {
              for (const rule of s.policy.rules) {
                if (rule.direction !== dir) continue;
                if (!rule.peers.some((p) => peerSelects(p, peerId)) || !l4Matches(rule, proto, port)) continue;
                (rule.action === 'deny' ? denyCookies : allowCookies).add(ruleCookie(s.id, rule.index));
              }
            }
            const v = lookupVerdict(entries, peerId, proto, port);
            const where = `round ${round} ep ${ep} ${dir} peer ${peerId} proto ${proto} port ${port}`;
            if (denyCookies.size > 0) {
              assert.equal(v.verdict, 'denied', where);
              assert.ok(denyCookies.has(v.cookie), `${where}: cookie ${v.cookie} is a matching deny rule`);
            } else if (allowCookies.size > 0 || !enforced) {
              assert.equal(v.verdict, 'allowed', where);
              assert.ok(allowCookies.has(v.cookie) || (!enforced && v.cookie === 0), `${where}: cookie ${v.cookie} is a matching allow rule`);
            } else {
              assert.deepEqual([v.verdict, v.reason], ['denied', 'no-rule'], where);
            }
            checked++;
          }
        }
      }
    }
  }
  assert.ok(checked > 100000);
});

// ---- scale -------------------------------------------------------------------------

test('scale: 1,000 subjects × 1,000 rules', () => {
  const N = 1000;
  const apps = 100;
  const scaleIdentities: IdentityInfo[] = [...reserved];
  const subjects: ResolveSubject[] = [];
  for (let i = 0; i < N; i++) {
    const ns = `ns${i % 10}`;
    const labels = identityLabelView({ app: `app${i % apps}`, pod: `p${i}` }, ns, { team: `t${i % 3}` });
    scaleIdentities.push({ id: 256 + i, labels });
    subjects.push({ endpointId: i + 1, identity: 256 + i, labels });
  }
  for (let i = 0; i < 50; i++) scaleIdentities.push({ id: FIRST_CIDR_IDENTITY + i, labels: {}, cidr: `10.${i}.0.0/16` });
  const policies: StoredPolicy[] = [];
  let rules = 0;
  for (let p = 0; p < 200; p++) {
    const ruleSpecs: RuleSpec[] = [];
    for (let r = 0; r < 5; r++) {
      if (r === 4) ruleSpecs.push({ direction: 'egress', peers: [cidr('10.0.0.0/8', [`10.${p % 37}.0.0/16`])], ports: [tcp(443)] });
      else ruleSpecs.push({ peers: [eps({ app: `app${(Math.floor(p / apps) * 50 + p + r + 1) % apps}` })], ports: [tcp(1000 + r * 10, 1000 + r * 10 + 5)] });
    }
    rules += ruleSpecs.length;
    policies.push({ id: p + 1, policy: policy(`p${p}`, [match({ app: `app${p % apps}` })], ruleSpecs, { ingress: true, egress: true }) });
  }
  assert.equal(rules, 1000);
  const start = performance.now();
  const result = resolveAll({ policies, identities: scaleIdentities }, subjects);
  const ms = performance.now() - start;
  console.log(`resolveAll: ${subjects.length} subjects × ${rules} rules in ${ms.toFixed(1)} ms`);
  assert.equal(result.size, N);
  const first = result.get(1)!;
  // subject app0 is selected by p0 (peers app1..app4) and p100 (peers app51..app54): 2 × 4 ingress rules × 10 peer identities × the prefixes of a 6-port range
  const perRule = portRangeToPrefixes(1000, 1005).length;
  assert.equal(first.ingress.length, 2 * 4 * 10 * perRule);
  assert.equal(first.egress.length, 50, 'CIDR identities of 10/8: p0 excepts 10.0/16, p100 excepts 10.26/16, so all 50 are allowed by one or the other');
  assert.deepEqual(first.enforced, { ingress: true, egress: true });
  let total = 0;
  for (const ep of result.values()) total += ep.ingress.length + ep.egress.length;
  assert.equal(total, N * (2 * 4 * 10 * perRule + 50));
});
