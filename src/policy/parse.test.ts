import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicyDocuments, parsePolicyObject } from './parse.js';
import { ManifestError } from '../k8s/manifest.js';
import type { LabelSelector, Policy, SelectorRequirement } from './types.js';

const inNs = (ns: string): SelectorRequirement => ({ key: 'io.kubernetes.pod.namespace', operator: 'In', values: [ns] });
const eq = (key: string, value: string): SelectorRequirement => ({ key, operator: 'In', values: [value] });
const sel = (...requirements: SelectorRequirement[]): LabelSelector => ({ requirements });

function one(yaml: string): Policy {
  const r = parsePolicyDocuments(yaml, 'test.yaml');
  assert.equal(r.policies.length, 1, JSON.stringify(r));
  return r.policies[0] as Policy;
}

/** The problems parsing `yaml` reports (it must throw ManifestError). */
function problems(yaml: string, source = 'test.yaml'): string[] {
  try {
    parsePolicyDocuments(yaml, source);
  } catch (e) {
    assert.ok(e instanceof ManifestError, String(e));
    assert.equal(e.message, e.problems.join('; '));
    return e.problems;
  }
  assert.fail('expected a ManifestError');
}

function assertProblem(yaml: string, expected: RegExp | string): void {
  const got = problems(yaml);
  const ok = got.some((p) => (typeof expected === 'string' ? p === expected : expected.test(p)));
  assert.ok(ok, `no problem matches ${String(expected)}; got:\n${got.join('\n')}`);
}

const np = (spec: string, meta = 'name: np\n  namespace: prod'): string =>
  `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  ${meta}\nspec:\n${spec}`;
const cnp = (spec: string, ns = 'prod'): string =>
  `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: cnp\n  namespace: ${ns}\nspec:\n${spec}`;
const ccnp = (spec: string): string => `apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: ccnp\nspec:\n${spec}`;

// ---------------------------------------------------------------- NetworkPolicy

test('NetworkPolicy: peers, ports and the namespace constraints', () => {
  const p = one(np(`  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    - namespaceSelector: {matchLabels: {team: a}}
    - namespaceSelector:
        matchExpressions: [{key: env, operator: In, values: [x, y]}]
      podSelector: {matchLabels: {role: db}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - port: 80
    - {protocol: UDP, port: 5000, endPort: 5010}
    - protocol: SCTP
`));
  assert.deepEqual(p, {
    kind: 'NetworkPolicy',
    name: 'np',
    namespace: 'prod',
    subjects: [sel(eq('app', 'web'), inNs('prod'))],
    defaultDeny: { ingress: true, egress: false },
    rules: [{
      direction: 'ingress',
      action: 'allow',
      peers: [
        { kind: 'endpoints', selector: sel(eq('role', 'client'), inNs('prod')) },
        { kind: 'endpoints', selector: sel(eq('io.cilium.k8s.namespace.labels.team', 'a')) },
        { kind: 'endpoints', selector: sel(eq('role', 'db'), { key: 'io.cilium.k8s.namespace.labels.env', operator: 'In', values: ['x', 'y'] }) },
        { kind: 'cidr', cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] },
      ],
      ports: [{ protocol: 'TCP', port: 80 }, { protocol: 'UDP', port: 5000, endPort: 5010 }, { protocol: 'SCTP' }],
      icmps: [],
      index: 0,
    }],
    notEnforced: [],
    source: p.source,
  });
  assert.equal((p.source.metadata as { name: string }).name, 'np');
});

test('NetworkPolicy: empty namespaceSelector means every namespace; default namespace is "default"', () => {
  const p = one(np(`  podSelector: {}
  egress:
  - to: [{namespaceSelector: {}}, {namespaceSelector: {}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]
`, 'name: np'));
  assert.equal(p.namespace, 'default');
  assert.deepEqual(p.subjects, [sel(inNs('default'))]);
  assert.deepEqual(p.rules[0]?.peers, [
    { kind: 'endpoints', selector: sel() },
    { kind: 'endpoints', selector: sel(eq('k8s-app', 'kube-dns')) },
  ]);
});

test('NetworkPolicy: default policyTypes and directions', () => {
  // Ingress only; no ingress rules: deny all ingress.
  let p = one(np('  podSelector: {}\n'));
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: false });
  assert.deepEqual(p.rules, []);
  // An egress section adds Egress; an empty one does not (Kubernetes defaulting).
  p = one(np('  podSelector: {}\n  egress: [{}]\n'));
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: true });
  assert.deepEqual(p.rules, [{ direction: 'egress', action: 'allow', peers: [{ kind: 'any' }], ports: [], icmps: [], index: 0 }]);
  p = one(np('  podSelector: {}\n  egress: []\n'));
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: false });
  // Explicit Egress only: deny all egress, ingress untouched.
  p = one(np('  podSelector: {}\n  policyTypes: [Egress]\n'));
  assert.deepEqual(p.defaultDeny, { ingress: false, egress: true });
  // ingress: [{}] allows everything; rule indexes run over ingress then egress.
  p = one(np('  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress: [{}]\n  egress: [{ports: [{port: 53, protocol: UDP}]}, {to: []}]\n'));
  assert.deepEqual(p.rules.map((r) => [r.direction, r.index, r.peers, r.ports]), [
    ['ingress', 0, [{ kind: 'any' }], []],
    ['egress', 1, [{ kind: 'any' }], [{ protocol: 'UDP', port: 53 }]],
    ['egress', 2, [{ kind: 'any' }], []],
  ]);
});

test('NetworkPolicy: rules of a direction not in policyTypes are ignored, with a note', () => {
  const p = one(np('  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n  egress: [{}]\n'));
  assert.deepEqual(p.rules.map((r) => [r.direction, r.index]), [['egress', 1]]);
  assert.deepEqual(p.notEnforced, ['spec.ingress: ignored because spec.policyTypes does not include Ingress (as in Kubernetes)']);
});

test('NetworkPolicy: validation errors name document, kind, name and field', () => {
  assertProblem(np('  podSelector: {}\n  ingress: [{ports: [{port: http}]}]\n'),
    'test.yaml document 1 (NetworkPolicy "np"): spec.ingress[0].ports[0].port: named ports are not supported (got "http"); give the port number');
  assertProblem(np('  podSelector: {}\n  ingress: [{ports: [{port: 0}]}]\n'), /ports\[0\]\.port: must be a port number 1-65535, got 0/);
  assertProblem(np('  podSelector: {}\n  ingress: [{ports: [{endPort: 90}]}]\n'), /ports\[0\]\.endPort: requires port/);
  assertProblem(np('  podSelector: {}\n  ingress: [{ports: [{port: 90, endPort: 80}]}]\n'), /endPort: must be between port \(90\) and 65535, got 80/);
  assertProblem(np('  podSelector: {}\n  ingress: [{ports: [{port: 90, protocol: ICMP}]}]\n'), /protocol: must be one of TCP, UDP, SCTP, got "ICMP"/);
  assertProblem(np('  podSelector: {}\n  ingress: [{from: [{}]}]\n'), /spec\.ingress\[0\]\.from\[0\]: must specify podSelector, namespaceSelector or ipBlock/);
  assertProblem(np('  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n'), /from\[0\]: ipBlock cannot be combined/);
  assertProblem(np('  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.1/8}}]}]\n'), /ipBlock\.cidr: 10\.0\.0\.1\/8 has host bits set \(did you mean 10\.0\.0\.0\/8\?\)/);
  assertProblem(np('  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]\n'), /except\[0\]: 10\.0\.0\.0\/8 must lie inside 10\.0\.0\.0\/8 \(a strict subset of cidr\)/);
  assertProblem(np('  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]\n'), /except\[0\]: 11\.0\.0\.0\/16 must lie inside/);
  assertProblem(np('  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: ["fd00::/64"]}}]}]\n'), /except\[0\]: fd00::\/64 must lie inside/);
  assertProblem(np('  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0}}]}]\n'), /ipBlock\.cidr: not a CIDR/);
  assertProblem(np('  policyTypes: [Ingress]\n'), 'test.yaml document 1 (NetworkPolicy "np"): spec.podSelector: required');
  assertProblem(np('  podSelector: {}\n  policyTypes: [Ingress, Ingress]\n'), /spec\.policyTypes: must not repeat/);
  assertProblem(np('  podSelector: {}\n  policyTypes: [ingress]\n'), /spec\.policyTypes\[0\]: must be one of Ingress, Egress, got "ingress"/);
  assertProblem(np('  podSelector: {matchLabels: {"-bad": x}}\n'), /spec\.podSelector\.matchLabels\["-bad"\]: label key "-bad" must be/);
  assertProblem(np('  podSelector: {matchLabels: {app: "a b"}}\n'), /matchLabels\.app: label app: value "a b"/);
  assertProblem(np('  podSelector: {matchLabels: {version: 1}}\n'), /matchLabels\.version: must be a string, got number \(quote the value\)/);
  assertProblem(np('  podSelector: {matchExpressions: [{key: a, operator: In}]}\n'), /matchExpressions\[0\]\.values: must be non-empty when operator is In/);
  assertProblem(np('  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}\n'), /matchExpressions\[0\]\.values: must be empty when operator is Exists/);
  assertProblem(np('  podSelector: {}\n', 'name: Bad_Name'), /metadata\.name: must be a DNS subdomain/);
  assertProblem(np('  podSelector: {}\n  ingres: []\n'), 'test.yaml document 1 (NetworkPolicy "np"): spec.ingres: unknown field');
});

test('NetworkPolicy: every problem of a document is reported', () => {
  const got = problems(np('  podSelector: {}\n  ingress: [{ports: [{port: http}, {port: 70000}]}]\n'));
  assert.equal(got.length, 2);
});

test('NetworkPolicy: IPv6 CIDRs are canonicalised', () => {
  const p = one(np('  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: "FD00:0:0:0::/48", except: ["fd00:0:0:1::/64"]}}]}]\n'));
  assert.deepEqual(p.rules[0]?.peers, [{ kind: 'cidr', cidr: 'fd00::/48', except: ['fd00:0:0:1::/64'] }]);
});

test('null fields count as absent', () => {
  const p = one(np('  podSelector: {}\n  ingress:\n  egress:\n'));
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: false });
  assert.deepEqual(p.rules, []);
});

// ---------------------------------------------------------------- Cilium

test('CiliumNetworkPolicy: full mapping of an L3/L4 policy', () => {
  const p = one(cnp(`  endpointSelector: {matchLabels: {"k8s:app": web}}
  ingress:
  - fromEndpoints:
    - matchLabels: {"any:role": client}
    toPorts:
    - ports: [{port: "80", protocol: TCP}, {port: 8080}]
    - ports: [{port: "0", protocol: UDP}, {port: 9000, endPort: 9010}]
  egress:
  - toEntities: [world, kube-apiserver]
  - toCIDR: [192.0.2.1, "2001:db8::/32"]
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.0.0.0/8, 10.1.0.0/16]}]
`));
  assert.deepEqual(p, {
    kind: 'CiliumNetworkPolicy',
    name: 'cnp',
    namespace: 'prod',
    subjects: [sel(eq('app', 'web'), inNs('prod'))],
    defaultDeny: { ingress: true, egress: true },
    rules: [
      {
        direction: 'ingress', action: 'allow', index: 0, icmps: [],
        peers: [{ kind: 'endpoints', selector: sel(eq('role', 'client'), inNs('prod')) }],
        ports: [{ protocol: 'TCP', port: 80 }, { protocol: 'ANY', port: 8080 }, { protocol: 'UDP' }, { protocol: 'ANY', port: 9000, endPort: 9010 }],
      },
      { direction: 'egress', action: 'allow', index: 1, icmps: [], ports: [], peers: [{ kind: 'entity', entity: 'world' }, { kind: 'entity', entity: 'kube-apiserver' }] },
      { direction: 'egress', action: 'allow', index: 2, icmps: [], ports: [], peers: [{ kind: 'cidr', cidr: '192.0.2.1/32', except: [] }, { kind: 'cidr', cidr: '2001:db8::/32', except: [] }] },
      { direction: 'egress', action: 'allow', index: 3, icmps: [], ports: [], peers: [{ kind: 'cidr', cidr: '10.0.0.0/8', except: ['10.0.0.0/8', '10.1.0.0/16'] }] },
    ],
    notEnforced: [],
    source: p.source,
  });
});

test('CiliumNetworkPolicy: peer selectors naming a namespace or namespace labels are not scoped', () => {
  const p = one(cnp(`  endpointSelector: {}
  ingress:
  - fromEndpoints:
    - {}
    - matchLabels: {"k8s:io.kubernetes.pod.namespace": other, app: x}
    - matchExpressions: [{key: io.kubernetes.pod.namespace, operator: Exists}]
    - matchLabels: {"k8s:io.cilium.k8s.namespace.labels.team": a}
`));
  assert.deepEqual(p.subjects, [sel(inNs('prod'))]);
  assert.deepEqual(p.rules[0]?.peers.map((x) => (x.kind === 'endpoints' ? x.selector : x)), [
    sel(inNs('prod')),
    sel(inNs('other'), eq('app', 'x')),
    sel({ key: 'io.kubernetes.pod.namespace', operator: 'Exists' }),
    sel(eq('io.cilium.k8s.namespace.labels.team', 'a')),
  ]);
});

test('CiliumNetworkPolicy: endpointSelector cannot leave the policy namespace', () => {
  // The own namespace is accepted (and not repeated).
  assert.deepEqual(one(cnp('  endpointSelector: {matchLabels: {"k8s:io.kubernetes.pod.namespace": prod}}\n  ingress: [{}]\n')).subjects, [sel(inNs('prod'))]);
  assertProblem(cnp('  endpointSelector: {matchLabels: {"k8s:io.kubernetes.pod.namespace": other}}\n  ingress: [{}]\n'),
    /spec\.endpointSelector: a CiliumNetworkPolicy only selects endpoints in its own namespace "prod"/);
});

test('CiliumClusterwideNetworkPolicy: no namespace anywhere', () => {
  const p = one(ccnp('  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: x}}]}]\n'));
  assert.equal(p.namespace, undefined);
  assert.ok(!('namespace' in p));
  assert.deepEqual(p.subjects, [sel(eq('app', 'web'))]);
  assert.deepEqual(p.rules[0]?.peers, [{ kind: 'endpoints', selector: sel(eq('app', 'x')) }]);
  assertProblem(ccnp('  endpointSelector: {}\n  ingress: [{}]\n').replace('name: ccnp', 'name: ccnp\n  namespace: x'), /metadata\.namespace: must not be set/);
});

test('Cilium: empty rule, L4-only rules and ICMP types', () => {
  const p = one(cnp(`  endpointSelector: {}
  ingress:
  - {}
  - toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - icmps:
    - fields: [{type: EchoRequest}, {type: 0}, {type: "11"}, {type: EchoRequest, family: IPv6}, {type: PacketTooBig, family: IPv6}]
  - fromEntities: [none]
    toPorts: [{ports: [{port: "53"}]}]
`));
  assert.deepEqual(p.rules.map((r) => [r.peers, r.ports, r.icmps]), [
    [[], [], []],
    [[{ kind: 'any' }], [{ protocol: 'TCP', port: 443 }], []],
    [[{ kind: 'any' }], [], [{ family: 'IPv4', type: 8 }, { family: 'IPv4', type: 0 }, { family: 'IPv4', type: 11 }, { family: 'IPv6', type: 128 }, { family: 'IPv6', type: 2 }]],
    [[], [{ protocol: 'ANY', port: 53 }], []],
  ]);
  assertProblem(cnp('  endpointSelector: {}\n  ingress: [{icmps: [{fields: [{type: PacketTooBig}]}]}]\n'), /icmps\[0\]\.fields\[0\]\.type: unknown ICMP type name "PacketTooBig"/);
  assertProblem(cnp('  endpointSelector: {}\n  ingress: [{icmps: [{fields: [{type: 256}]}]}]\n'), /type: must be an ICMP type 0-255 or a type name, got 256/);
  assertProblem(cnp('  endpointSelector: {}\n  ingress: [{icmps: [{fields: [{type: 8, family: IPv5}]}]}]\n'), /family: must be one of IPv4, IPv6/);
});

test('Cilium: entities', () => {
  const all = ['world', 'host', 'cluster', 'all', 'remote-node', 'health', 'unmanaged', 'init', 'kube-apiserver', 'ingress'];
  const p = one(cnp(`  endpointSelector: {}\n  egress: [{toEntities: [${all.join(', ')}]}]\n`));
  assert.deepEqual(p.rules[0]?.peers, all.map((entity) => ({ kind: 'entity', entity })));
  assertProblem(cnp('  endpointSelector: {}\n  egress: [{toEntities: [internet]}]\n'), /spec\.egress\[0\]\.toEntities\[0\]: unknown entity "internet"/);
  assertProblem(cnp('  endpointSelector: {}\n  egress: [{toEntities: [world-ipv4]}]\n'), /entity world-ipv4 is not supported yet/);
});

test('Cilium: default deny follows the rules present and enableDefaultDeny; specs are ORed and indexed in order', () => {
  let p = one(cnp('  endpointSelector: {}\n  egress: [{}]\n  enableDefaultDeny: {egress: false}\n'));
  assert.deepEqual(p.defaultDeny, { ingress: false, egress: false });
  p = one(cnp('  endpointSelector: {}\n  ingressDeny: [{fromEntities: [world]}]\n'));
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: false });
  assert.equal(p.rules[0]?.action, 'deny');
  p = one(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: multi}
specs:
- endpointSelector: {matchLabels: {app: a}}
  egressDeny: [{toEntities: [world]}]
  egress: [{toEntities: [host]}]
  ingressDeny: [{fromEntities: [world]}]
  ingress: [{fromEntities: [cluster]}]
  enableDefaultDeny: {ingress: false}
- endpointSelector: {matchLabels: {app: a}}
  ingress: [{fromEntities: [health]}]
`);
  assert.deepEqual(p.subjects, [sel(eq('app', 'a'), inNs('default'))]);
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: true });
  assert.deepEqual(p.rules.map((r) => [r.index, r.direction, r.action, r.peers[0]]), [
    [0, 'ingress', 'allow', { kind: 'entity', entity: 'cluster' }],
    [1, 'ingress', 'deny', { kind: 'entity', entity: 'world' }],
    [2, 'egress', 'allow', { kind: 'entity', entity: 'host' }],
    [3, 'egress', 'deny', { kind: 'entity', entity: 'world' }],
    [4, 'ingress', 'allow', { kind: 'entity', entity: 'health' }],
  ]);
});

test('Cilium: L7 rules are kept and reported as not enforced', () => {
  const p = one(cnp(`  endpointSelector: {}
  ingress:
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/api/.*", headers: [X-Test], headerMatches: [{name: X-Token, value: abc}]}]
  egress:
  - toEndpoints: [{matchLabels: {k8s-app: kube-dns, "k8s:io.kubernetes.pod.namespace": kube-system}}]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules: {dns: [{matchPattern: "*.example.com"}]}
  - toFQDNs: [{matchName: api.example.com}, {matchPattern: "*.example.org"}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
`));
  assert.deepEqual(p.rules[0]?.l7, { http: [{ method: 'GET', path: '/api/.*', headers: ['X-Test'], headerMatches: [{ name: 'X-Token', value: 'abc' }] }] });
  assert.deepEqual(p.rules[0]?.ports, [{ protocol: 'TCP', port: 80 }]);
  assert.deepEqual(p.rules[0]?.peers, [{ kind: 'any' }]);
  assert.deepEqual(p.rules[1]?.l7, { dns: [{ matchPattern: '*.example.com' }] });
  assert.deepEqual(p.rules[1]?.peers, [{ kind: 'endpoints', selector: sel(eq('k8s-app', 'kube-dns'), inNs('kube-system')) }]);
  assert.deepEqual(p.rules[2]?.l7, { fqdns: [{ matchName: 'api.example.com' }, { matchPattern: '*.example.org' }] });
  assert.deepEqual(p.rules[2]?.peers, [], 'FQDN peers are not resolved: the rule allows nothing yet');
  assert.deepEqual(p.rules[2]?.ports, [{ protocol: 'TCP', port: 443 }]);
  assert.deepEqual(p.notEnforced, [
    'ingress rule 0: HTTP rules are parsed but not yet enforced (the L4 part of the rule is enforced)',
    'egress rule 1: DNS rules are parsed but not yet enforced (the L4 part of the rule is enforced)',
    'egress rule 2: toFQDNs are parsed but not yet enforced (the rule allows no traffic until they are)',
  ]);
});

test('Cilium: L7 validation', () => {
  const http = (port: string): string => cnp(`  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [${port}], rules: {http: [{method: GET}]}}]}]\n`);
  assertProblem(http('{port: "80"}'), /ports\[0\]\.protocol: HTTP rules only apply to TCP \(not ANY\); set protocol: TCP/);
  assertProblem(http('{port: "0", protocol: TCP}'), /ports\[0\]\.port: L7 rules cannot be used with port 0/);
  assertProblem(cnp('  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: "53"}], rules: {dns: [{matchName: x.com}]}}]}]\n'), /rules\.dns: DNS rules are not allowed on ingress/);
  assertProblem(cnp('  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchName: x.com, matchPattern: "*"}]}}]}]\n'), /rules\.dns\[0\]: must have exactly one of matchName and matchPattern/);
  assertProblem(cnp('  endpointSelector: {}\n  egress: [{toFQDNs: [{matchName: "bad name"}]}]\n'), /toFQDNs\[0\]\.matchName: must be a DNS name/);
  assertProblem(cnp('  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{path: "("}]}}]}]\n'), /http\[0\]\.path: must be a regular expression/);
  assertProblem(cnp('  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {kafka: [{topic: x}]}}]}]\n'), /rules\.kafka: kafka rules are not supported/);
  assertProblem(cnp('  endpointSelector: {}\n  ingressDeny: [{toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{}]}}]}]\n'), /spec\.ingressDeny\[0\]\.toPorts\[0\]\.rules: deny rules cannot have L7 rules/);
  assertProblem(cnp('  endpointSelector: {}\n  egressDeny: [{toFQDNs: [{matchName: x.com}]}]\n'), /spec\.egressDeny\[0\]\.toFQDNs: deny rules cannot use toFQDNs/);
});

test('Cilium: ports', () => {
  const port = (p: string): string => cnp(`  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [${p}]}]}]\n`);
  assertProblem(port('{port: http}'), 'test.yaml document 1 (CiliumNetworkPolicy "cnp"): spec.ingress[0].toPorts[0].ports[0].port: named ports are not supported (got "http"); give the port number');
  assertProblem(port('{port: "70000"}'), /ports\[0\]\.port: must be a port number 0-65535 \(0: every port\), got "70000"/);
  assertProblem(port('{protocol: TCP}'), /ports\[0\]\.port: required/);
  assertProblem(port('{port: "80", protocol: ICMP}'), /ports\[0\]\.protocol: use icmps/);
  assertProblem(port('{port: "80", protocol: tcp}'), /ports\[0\]\.protocol: must be one of TCP, UDP, SCTP, ANY, got "tcp"/);
  assertProblem(port('{port: "80", endPort: 70}'), /ports\[0\]\.endPort: must be between port \(80\) and 65535, got 70/);
  assertProblem(port('{port: "0", endPort: 70}'), /ports\[0\]\.endPort: needs a non-zero port/);
  assertProblem(cnp('  endpointSelector: {}\n  ingress: [{toPorts: [{}]}]\n'), /toPorts\[0\]\.ports: must list at least one port/);
  assert.deepEqual(one(port('{port: "0"}')).rules[0]?.ports, [{ protocol: 'ANY' }]);
  assert.deepEqual(one(port('{port: 5000, endPort: 5000, protocol: SCTP}')).rules[0]?.ports, [{ protocol: 'SCTP', port: 5000, endPort: 5000 }]);
});

test('Cilium: rejected constructs', () => {
  const c = (spec: string): string => cnp(`  endpointSelector: {}\n${spec}`);
  assertProblem(cnp('  nodeSelector: {}\n  ingress: [{}]\n'), /spec\.nodeSelector: nodeSelector \(host policies\) is not supported/);
  assertProblem(cnp('  ingress: [{}]\n'), /spec\.endpointSelector: required/);
  assertProblem(c(''), /spec: must have at least one of ingress, ingressDeny, egress, egressDeny/);
  assertProblem(c('  ingress: [{fromEndpoints: [{}], fromCIDR: [10.0.0.0/8]}]\n'), /spec\.ingress\[0\]: combining fromEndpoints and fromCIDR in one rule is not supported/);
  assertProblem(c('  egress: [{toEntities: [world], toFQDNs: [{matchName: a.com}]}]\n'), /combining toEntities and toFQDNs/);
  assertProblem(c('  ingress: [{toPorts: [{ports: [{port: "80"}]}], icmps: [{fields: [{type: 8}]}]}]\n'), /spec\.ingress\[0\]: toPorts and icmps cannot be combined/);
  assertProblem(c('  ingress: [{fromRequires: [{}]}]\n'), /spec\.ingress\[0\]\.fromRequires: fromRequires is not supported/);
  assertProblem(c('  egress: [{toServices: [{k8sService: {serviceName: x}}]}]\n'), /spec\.egress\[0\]\.toServices: toServices is not supported/);
  assertProblem(c('  egress: [{toGroups: [{aws: {}}]}]\n'), /toGroups \(cloud provider groups\) is not supported/);
  assertProblem(c('  ingress: [{fromCIDRSet: [{cidrGroupRef: g}]}]\n'), /fromCIDRSet\[0\]: cidrGroupRef and cidrGroupSelector .* are not supported/);
  assertProblem(c('  ingress: [{fromCIDRSet: [{cidr: 10.0.0.0/16, except: [10.0.0.0/8]}]}]\n'), /fromCIDRSet\[0\]\.except\[0\]: 10\.0\.0\.0\/8 must lie inside 10\.0\.0\.0\/16/);
  assertProblem(c('  ingress: [{fromCIDR: [10.0.0.1/24]}]\n'), /fromCIDR\[0\]: 10\.0\.0\.1\/24 has host bits set \(did you mean 10\.0\.0\.0\/24\?\)/);
  assertProblem(c('  ingress: [{fromEndpoints: [{matchLabels: {"reserved:host": ""}}]}]\n'), /fromEndpoints\[0\]\.matchLabels\["reserved:host"\]: reserved labels .* use fromEntities\/toEntities \(e\.g\. "host"\)/);
  assertProblem(c('  ingress: [{fromEndpoints: [{matchLabels: {"container:x": ""}}]}]\n'), /label source "container" is not supported/);
  assertProblem(c('  ingress: [{fromEndpoint: [{}]}]\n'), 'test.yaml document 1 (CiliumNetworkPolicy "cnp"): spec.ingress[0].fromEndpoint: unknown field');
  assertProblem('apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\n', /\(CiliumNetworkPolicy "x"\): spec or specs is required/);
});

test('Cilium: specs with different endpointSelectors are refused', () => {
  assertProblem(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: multi}
specs:
- endpointSelector: {matchLabels: {app: a}}
  ingress: [{}]
- endpointSelector: {matchLabels: {app: b}}
  ingress: [{}]
`, 'test.yaml document 1 (CiliumNetworkPolicy "multi"): specs[1].endpointSelector: specs with different endpointSelectors are not supported yet; split them into separate policies');
});

// ---------------------------------------------------------------- documents

test('Namespace documents, List items, unsupported kinds and empty documents', () => {
  const r = parsePolicyDocuments(`---
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {team: a, kubernetes.io/metadata.name: prod}
---
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: a, namespace: prod}
  spec: {podSelector: {}}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cm}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
---
apiVersion: extensions/v1beta1
kind: NetworkPolicy
metadata: {name: old}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumNetworkPolicy
metadata: {name: alpha}
`, 'all.yaml');
  assert.deepEqual(r.namespaces, [{ name: 'prod', labels: { team: 'a', 'kubernetes.io/metadata.name': 'prod' } }]);
  assert.deepEqual(r.policies.map((p) => p.name), ['a']);
  assert.deepEqual(r.unsupported, [
    'all.yaml document 3 item 2 (v1/ConfigMap "cm"): kind ConfigMap is not handled yet',
    'all.yaml document 4 (v1/ConfigMap "web"): kind ConfigMap is not handled yet',
    'all.yaml document 5 (extensions/v1beta1/NetworkPolicy "old"): apiVersion extensions/v1beta1 of NetworkPolicy is not handled (use networking.k8s.io/v1)',
    'all.yaml document 6 (cilium.io/v2alpha1/CiliumNetworkPolicy "alpha"): apiVersion cilium.io/v2alpha1 of CiliumNetworkPolicy is not handled (use cilium.io/v2)',
  ]);
  assert.deepEqual(parsePolicyDocuments('', 'empty.yaml'), { policies: [], namespaces: [], services: [], slices: [], unsupported: [] });
  assert.deepEqual(parsePolicyDocuments('---\n---\n# only a comment\n', 'empty.yaml'), { policies: [], namespaces: [], services: [], slices: [], unsupported: [] });
});

test('Namespace validation', () => {
  assertProblem('apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {"bad key": x}}\n', /metadata\.labels\["bad key"\]: label key "bad key"/);
  assertProblem('apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {kubernetes.io/metadata.name: other}}\n', /must be the namespace's name "prod"/);
  assertProblem('apiVersion: v1\nkind: Namespace\nmetadata: {name: Prod}\n', /metadata\.name: must be a DNS label/);
});

test('a bad document fails the whole file and every bad document is named', () => {
  const good = cnp('  endpointSelector: {}\n  ingress: [{}]\n');
  const got = problems(`${good}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-web}
spec:
  endpointSelector: {}
  ingress: [{toPorts: [{ports: [{port: "80"}]}], fromEndpoints: [{matchLabels: {app: x}}], unknownField: 1}]
---
kind: Thing
---
- just a list
---
apiVersion: v1
`, 'policy.yaml');
  assert.deepEqual(got, [
    'policy.yaml document 2 (CiliumNetworkPolicy "allow-web"): spec.ingress[0].unknownField: unknown field',
    'policy.yaml document 3 (Thing): apiVersion: required (a string, e.g. cilium.io/v2)',
    'policy.yaml document 4: must be a mapping with apiVersion and kind, got a list',
    'policy.yaml document 5: kind: required (a string, e.g. CiliumNetworkPolicy)',
  ]);
});

test('YAML syntax errors name the document and line', () => {
  const got = problems('apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n---\na: b\n  c: d\n', 'bad.yaml');
  assert.equal(got.length, 2, got.join('\n'));
  assert.match(got[0] as string, /^bad\.yaml document 2 line 6: YAML syntax error: Flow sequence/);
  assert.match(got[1] as string, /^bad\.yaml document 3 line 7: YAML syntax error: /);
  assertProblem('a: 1\na: 2\n', /^test\.yaml document 1 line 2: YAML syntax error: Map keys must be unique/);
});

test('the same policy twice is an error', () => {
  const doc = cnp('  endpointSelector: {}\n  ingress: [{}]\n');
  assertProblem(`${doc}\n---\n${doc}`, 'test.yaml document 2 (CiliumNetworkPolicy "cnp"): defines the same CiliumNetworkPolicy as document 1');
  // The same name in another namespace is another policy.
  assert.equal(parsePolicyDocuments(`${doc}\n---\n${cnp('  endpointSelector: {}\n  ingress: [{}]\n', 'other')}`, 'x').policies.length, 2);
});

test('metadata fields set by the API server are accepted; status of Cilium policies too', () => {
  const p = one(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: x
  namespace: prod
  uid: "1234"
  resourceVersion: "5"
  generation: 2
  creationTimestamp: "2024-01-01T00:00:00Z"
  labels: {a: b}
  annotations: {note: "anything goes here"}
spec:
  description: test
  labels: [{key: owner, value: me, source: k8s}]
  endpointSelector: {}
  ingress: [{}]
status:
  conditions: []
`);
  assert.equal(p.name, 'x');
});

test('parsePolicyObject: JSON bodies', () => {
  const body = { apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'c' }, spec: { endpointSelector: {}, egress: [{ toEntities: ['world'] }] } };
  const p = parsePolicyObject(body, 'request body');
  assert.equal(p?.kind, 'CiliumClusterwideNetworkPolicy');
  assert.deepEqual(p?.source, body);
  assert.notEqual(p?.source, body, 'source is a copy');
  assert.equal(parsePolicyObject({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 's' } }, 'request body'), undefined);
  assert.equal(parsePolicyObject({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 's' } }, 'request body'), undefined);
  assert.throws(() => parsePolicyObject({ ...body, spec: { endpointSelector: {}, egress: [{ toEntities: ['moon'] }] } }, 'request body'),
    (e: unknown) => e instanceof ManifestError && e.problems.length === 1
      && /^request body \(CiliumClusterwideNetworkPolicy "c"\): spec\.egress\[0\]\.toEntities\[0\]: unknown entity "moon"/.test(e.message));
  assert.throws(() => parsePolicyObject({ ...body, apiVersion: 'cilium.io/v1' }, 'request body'), /apiVersion cilium\.io\/v1 of CiliumClusterwideNetworkPolicy is not handled/);
  assert.throws(() => parsePolicyObject('nope', 'request body'), /request body: must be a mapping with apiVersion and kind/);
});

test('JSON text parses as YAML', () => {
  const p = one(JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'j' }, spec: { podSelector: {}, ingress: [{ ports: [{ port: 443 }] }] } }));
  assert.deepEqual(p.rules[0]?.ports, [{ protocol: 'TCP', port: 443 }]);
});
