import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse } from 'yaml';
import { ManifestError } from '../k8s/manifest.js';
import { checkServiceSet, convertServiceDocument, isServiceKind, parseServiceDocument, slicePortFor, type ServiceSetOptions } from './parse.js';
import type { EndpointSliceSpec, ServiceResource, ServiceSpec } from './types.js';

const WHERE = { source: 'svc.yaml', index: 0 };

function doc(yaml: string): ServiceResource {
  return parseServiceDocument(parse(yaml), WHERE);
}

function svc(yaml: string): ServiceSpec {
  const r = doc(yaml);
  assert.equal(r.kind, 'Service');
  return r as ServiceSpec;
}

function slice(yaml: string): EndpointSliceSpec {
  const r = doc(yaml);
  assert.equal(r.kind, 'EndpointSlice');
  return r as EndpointSliceSpec;
}

/** The problems parsing `yaml` reports (it must throw ManifestError). */
function problems(yaml: string): string[] {
  try {
    doc(yaml);
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

const service = (spec: string, meta = 'name: web\n  namespace: prod'): string => `apiVersion: v1\nkind: Service\nmetadata:\n  ${meta}\nspec:\n${spec}`;
const oneTcpPort = '  ports: [{port: 80}]\n';
const PREFIX = 'svc.yaml document 1 (Service "web"): ';

const endpointSlice = (body: string, meta = 'name: web-abc\n  namespace: prod\n  labels: {kubernetes.io/service-name: web}'): string =>
  `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  ${meta}\n${body}`;
const SLICE_PREFIX = 'svc.yaml document 1 (EndpointSlice "web-abc"): ';

// ---------------------------------------------------------------- dispatch

test('isServiceKind: exactly v1 Service and discovery.k8s.io/v1 EndpointSlice', () => {
  assert.equal(isServiceKind('v1', 'Service'), true);
  assert.equal(isServiceKind('discovery.k8s.io/v1', 'EndpointSlice'), true);
  assert.equal(isServiceKind('serving.knative.dev/v1', 'Service'), false);
  assert.equal(isServiceKind('discovery.k8s.io/v1beta1', 'EndpointSlice'), false);
  assert.equal(isServiceKind('v1', 'Endpoints'), false);
  assert.equal(isServiceKind('networking.k8s.io/v1', 'NetworkPolicy'), false);
  assert.equal(isServiceKind(undefined, undefined), false);
});

// ---------------------------------------------------------------- Service: valid

test('Service: ClusterIP with defaults (Kubernetes defaulting applied)', () => {
  const s = svc(service(`  selector: {app: web}\n  ports:\n  - port: 80\n    targetPort: 8080\n`, 'name: web'));
  assert.deepEqual(s, {
    kind: 'Service',
    name: 'web',
    namespace: 'default',
    labels: {},
    type: 'ClusterIP',
    headless: false,
    clusterIPs: [],
    ipFamilies: ['IPv4'],
    ipFamilyPolicy: 'SingleStack',
    ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080 }],
    selector: { app: 'web' },
    sessionAffinity: 'None',
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    publishNotReadyAddresses: false,
  });
  assert.deepEqual(JSON.parse(JSON.stringify(s)), s, 'plain JSON data');
});

test('Service: named ports, UDP, targetPort default and named targetPort, given clusterIP', () => {
  const s = svc(service(`  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, protocol: UDP, port: 53, targetPort: 5353}
  - {name: dns-tcp, protocol: TCP, port: 53, targetPort: dns-tcp}
  - {name: metrics, port: 9153, appProtocol: http}
  - {name: zero, port: 81, targetPort: 0}
`));
  assert.deepEqual(s.clusterIPs, ['10.96.0.10']);
  assert.deepEqual(s.ports, [
    { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 },
    { name: 'dns-tcp', protocol: 'TCP', port: 53, targetPort: 'dns-tcp' },
    { name: 'metrics', protocol: 'TCP', port: 9153, targetPort: 9153, appProtocol: 'http' },
    { name: 'zero', protocol: 'TCP', port: 81, targetPort: 81 },
  ]);
});

test('Service: what kubectl get -o yaml prints is accepted (metadata, status, defaulted fields)', () => {
  const s = svc(`apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: prod
  uid: 4f7c7f0e-1111-2222-3333-444455556666
  resourceVersion: "123"
  creationTimestamp: "2024-01-01T00:00:00Z"
  labels: {app: web}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
  finalizers: [service.kubernetes.io/load-balancer-cleanup]
  managedFields: []
spec:
  clusterIP: 10.96.12.34
  clusterIPs: [10.96.12.34]
  internalTrafficPolicy: Cluster
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
  selector: {app: web}
  sessionAffinity: None
  type: ClusterIP
  externalIPs: []
status:
  loadBalancer: {}
`);
  assert.equal(s.uid, '4f7c7f0e-1111-2222-3333-444455556666');
  assert.deepEqual(s.labels, { app: 'web' });
  assert.deepEqual(s.clusterIPs, ['10.96.12.34']);
});

test('Service: dual stack', () => {
  let s = svc(service(`  ipFamilyPolicy: PreferDualStack\n${oneTcpPort}`));
  assert.deepEqual([s.ipFamilyPolicy, s.ipFamilies, s.clusterIPs], ['PreferDualStack', ['IPv4', 'IPv6'], []]);
  s = svc(service(`  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6]\n${oneTcpPort}`));
  assert.deepEqual([s.ipFamilyPolicy, s.ipFamilies], ['RequireDualStack', ['IPv6', 'IPv4']]);
  // Two cluster IPs and no policy: RequireDualStack; families follow the addresses; IPv6 canonicalised.
  s = svc(service(`  clusterIPs: ["FD00:96:0:0::A", 10.96.0.10]\n${oneTcpPort}`));
  assert.deepEqual([s.ipFamilyPolicy, s.ipFamilies, s.clusterIPs], ['RequireDualStack', ['IPv6', 'IPv4'], ['fd00:96::a', '10.96.0.10']]);
  // Two families and no policy: RequireDualStack.
  s = svc(service(`  ipFamilies: [IPv4, IPv6]\n${oneTcpPort}`));
  assert.deepEqual([s.ipFamilyPolicy, s.ipFamilies], ['RequireDualStack', ['IPv4', 'IPv6']]);
  // Single stack IPv6 from the address alone.
  s = svc(service(`  clusterIP: "fd00:96::10"\n${oneTcpPort}`));
  assert.deepEqual([s.ipFamilyPolicy, s.ipFamilies, s.clusterIPs], ['SingleStack', ['IPv6'], ['fd00:96::10']]);
  // One address, dual stack: the agent allocates the second.
  s = svc(service(`  clusterIP: 10.96.0.11\n  clusterIPs: [10.96.0.11]\n  ipFamilyPolicy: RequireDualStack\n${oneTcpPort}`));
  assert.deepEqual([s.ipFamilies, s.clusterIPs], [['IPv4', 'IPv6'], ['10.96.0.11']]);
});

test('Service: NodePort with and without node ports, traffic policies', () => {
  const s = svc(service(`  type: NodePort
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  selector: {app: web}
  ports:
  - {name: http, port: 80, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP, nodePort: 30053}
  - {name: dns-tcp, port: 53, protocol: TCP, nodePort: 30053}
  - {name: other, port: 81, nodePort: 0}
`));
  assert.equal(s.type, 'NodePort');
  assert.equal(s.externalTrafficPolicy, 'Local');
  assert.equal(s.internalTrafficPolicy, 'Local');
  assert.deepEqual(s.ports.map((p) => [p.name, p.nodePort]), [['http', 30080], ['dns', 30053], ['dns-tcp', 30053], ['other', undefined]]);
  assert.ok(!('nodePort' in (s.ports[3] ?? {})), 'absent, not undefined');
  assert.equal(svc(service(`  type: NodePort\n${oneTcpPort}`)).externalTrafficPolicy, 'Cluster');
  assert.equal(svc(service(`  internalTrafficPolicy: Local\n${oneTcpPort}`)).internalTrafficPolicy, 'Local');
});

test('Service: ClientIP session affinity, default and explicit timeout', () => {
  let s = svc(service(`  sessionAffinity: ClientIP\n${oneTcpPort}`));
  assert.deepEqual([s.sessionAffinity, s.sessionAffinityTimeoutSeconds], ['ClientIP', 10800]);
  s = svc(service(`  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n${oneTcpPort}`));
  assert.deepEqual([s.sessionAffinity, s.sessionAffinityTimeoutSeconds], ['ClientIP', 60]);
  s = svc(service(`  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86400}}\n${oneTcpPort}`));
  assert.equal(s.sessionAffinityTimeoutSeconds, 86400);
  s = svc(service(`  sessionAffinity: None\n${oneTcpPort}`));
  assert.ok(!('sessionAffinityTimeoutSeconds' in s));
});

test('Service: headless', () => {
  let s = svc(service('  clusterIP: None\n  selector: {app: db}\n'));
  assert.deepEqual([s.headless, s.clusterIPs, s.ports], [true, [], []]);
  s = svc(service(`  clusterIP: None\n  clusterIPs: [None]\n  publishNotReadyAddresses: true\n${oneTcpPort}`));
  assert.deepEqual([s.headless, s.publishNotReadyAddresses, s.ports.length], [true, true, 1]);
});

test('Service: load-balancing algorithm annotation (Waggle and Cilium)', () => {
  const withAnn = (ann: string): ServiceSpec => svc(service(oneTcpPort, `name: web\n  annotations: {${ann}}`));
  assert.equal(withAnn('service.waggle.io/lb-algorithm: maglev').lbAlgorithm, 'maglev');
  assert.equal(withAnn('service.cilium.io/lb-algorithm: random').lbAlgorithm, 'random');
  assert.equal(withAnn('service.waggle.io/lb-algorithm: maglev, service.cilium.io/lb-algorithm: maglev').lbAlgorithm, 'maglev');
  assert.ok(!('lbAlgorithm' in withAnn('other.io/x: y')));
  assert.ok(!('lbAlgorithm' in withAnn('service.cilium.io/global: "true"')), 'other Cilium annotations are ignored');
});

test('Service: an empty selector is no selector; null fields are absent', () => {
  let s = svc(service(`  selector: {}\n${oneTcpPort}`));
  assert.ok(!('selector' in s));
  s = svc(service(`  selector:\n  clusterIP:\n  sessionAffinityConfig:\n${oneTcpPort}`));
  assert.ok(!('selector' in s));
  assert.deepEqual(s.clusterIPs, []);
});

// ---------------------------------------------------------------- Service: errors

test('Service: errors name document, kind, name and field', () => {
  assertProblem(service('  ports: [{port: 0}]\n'), `${PREFIX}spec.ports[0].port: must be a port number 1-65535, got 0`);
  assertProblem(service('  ports: [{port: 65536}]\n'), `${PREFIX}spec.ports[0].port: must be a port number 1-65535, got 65536`);
  assertProblem(service('  ports: [{port: "80"}]\n'), `${PREFIX}spec.ports[0].port: must be a port number 1-65535, got "80"`);
  assertProblem(service('  ports: [{name: http}]\n'), `${PREFIX}spec.ports[0].port: required`);
  assertProblem(service('  ports: []\n'), `${PREFIX}spec.ports: required: at least one port (only a headless service may have none)`);
  assertProblem(service('  selector: {app: web}\n'), `${PREFIX}spec.ports: required: at least one port (only a headless service may have none)`);
  assertProblem(service('  ports: [{port: 80}, {port: 81}]\n'), `${PREFIX}spec.ports[0].name: required when the service has more than one port`);
  assertProblem(service('  ports: [{name: a, port: 80}, {name: a, port: 81}]\n'), `${PREFIX}spec.ports[1].name: "a" is already the name of spec.ports[0]`);
  assertProblem(service('  ports: [{name: Http, port: 80}]\n'), `${PREFIX}spec.ports[0].name: must be a DNS label: 1-63 lower-case letters, digits and -, starting and ending with a letter or digit`);
  assertProblem(service('  ports: [{name: a, port: 80}, {name: b, port: 80, protocol: TCP}]\n'), `${PREFIX}spec.ports[1]: 80/TCP is already served by spec.ports[0]`);
  assertProblem(service('  ports: [{port: 80, protocol: SCTP}]\n'), `${PREFIX}spec.ports[0].protocol: SCTP is not supported yet (TCP or UDP)`);
  assertProblem(service('  ports: [{port: 80, protocol: tcp}]\n'), `${PREFIX}spec.ports[0].protocol: must be one of TCP, UDP, got "tcp"`);
  assertProblem(service('  ports: [{port: 80, targetPort: 70000}]\n'), `${PREFIX}spec.ports[0].targetPort: must be a port number 1-65535, got 70000`);
  assertProblem(service('  ports: [{port: 80, targetPort: "8080"}]\n'),
    `${PREFIX}spec.ports[0].targetPort: must be a port number or a port name, got the string "8080" (write the number without quotes)`);
  assertProblem(service('  ports: [{port: 80, targetPort: http_alt}]\n'),
    `${PREFIX}spec.ports[0].targetPort: must be a port number 1-65535 or a port name (an IANA service name: only lower-case letters, digits and -), got "http_alt"`);
  assertProblem(service('  ports: [{port: 80, targetPort: a-very-long-port-name}]\n'), /targetPort: must be a port number 1-65535 or a port name \(an IANA service name: at most 15 characters\)/);
  assertProblem(service('  ports: [{port: 80, targetPort: web--x}]\n'), /targetPort: .*no - at either end and no --/);
  assertProblem(service('  ports: [{port: 80, targetPort: [1]}]\n'), /spec\.ports\[0\]\.targetPort: must be a port number 1-65535, got \[1\]/);
  assertProblem(service('  ports: [{port: 80, nodePort: 30080}]\n'), `${PREFIX}spec.ports[0].nodePort: may only be set when spec.type is NodePort`);
  assertProblem(service('  type: NodePort\n  ports: [{port: 80, nodePort: 70000}]\n'), `${PREFIX}spec.ports[0].nodePort: must be a port number 1-65535, got 70000`);
  assertProblem(service('  type: NodePort\n  ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]\n'),
    `${PREFIX}spec.ports[1].nodePort: 30080/TCP is already the node port of spec.ports[0]`);
  assertProblem(service(`  prots: []\n${oneTcpPort}`), `${PREFIX}spec.prots: unknown field`);
  assertProblem(service(oneTcpPort.replace('port: 80', 'port: 80, tragetPort: 8080')), `${PREFIX}spec.ports[0].tragetPort: unknown field`);
  assertProblem(service(oneTcpPort, 'name: web\n  colour: blue'), `${PREFIX}metadata.colour: unknown field`);
  assertProblem(service(oneTcpPort, 'name: Web'), 'svc.yaml document 1 (Service "Web"): metadata.name: must be a DNS-1035 label: 1-63 lower-case letters, digits and -, starting with a letter and ending with a letter or digit');
  assertProblem(service(oneTcpPort, 'name: 1web'), /\(Service "1web"\): metadata\.name: must be a DNS-1035 label/);
  assertProblem(service(oneTcpPort, 'name: web\n  namespace: Prod'), /metadata\.namespace: must be a DNS label/);
  assertProblem(service(oneTcpPort, 'name: web\n  labels: {"-x": y}'), /metadata\.labels\["-x"\]: label key "-x"/);
  assertProblem(service(`  selector: {app: "a b"}\n${oneTcpPort}`), `${PREFIX}spec.selector.app: label app: value "a b" must be at most 63 characters of letters, digits, -, _ and ., starting and ending with a letter or digit`);
  assertProblem(service(`  selector: {app: 1}\n${oneTcpPort}`), `${PREFIX}spec.selector.app: must be a string, got number (quote the value)`);
  assertProblem('apiVersion: v1\nkind: Service\nmetadata: {name: web}\n', `${PREFIX}spec: required`);
  assertProblem('apiVersion: v2\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n', `${PREFIX}apiVersion: must be "v1", got "v2"`);
});

test('Service: types Waggle does not handle are refused clearly', () => {
  assertProblem(service(`  type: LoadBalancer\n${oneTcpPort}`), `${PREFIX}spec.type: LoadBalancer is not supported (Waggle handles ClusterIP and NodePort services)`);
  assertProblem(service('  type: ExternalName\n  externalName: example.com\n'), `${PREFIX}spec.type: ExternalName is not supported (Waggle handles ClusterIP and NodePort services)`);
  const got = problems(service(`  type: LoadBalancer\n  loadBalancerIP: 1.2.3.4\n  allocateLoadBalancerNodePorts: true\n${oneTcpPort}`));
  assert.deepEqual(got, [`${PREFIX}spec.type: LoadBalancer is not supported (Waggle handles ClusterIP and NodePort services)`], 'only the type is reported');
  assertProblem(service(`  type: Cluster\n${oneTcpPort}`), `${PREFIX}spec.type: must be one of ClusterIP, NodePort, got "Cluster"`);
  assertProblem(service(`  externalIPs: [192.0.2.1]\n${oneTcpPort}`), `${PREFIX}spec.externalIPs: not supported (Waggle serves cluster IPs and node ports)`);
  assertProblem(service(`  loadBalancerSourceRanges: [10.0.0.0/8]\n${oneTcpPort}`), `${PREFIX}spec.loadBalancerSourceRanges: only for type LoadBalancer, which Waggle does not support`);
  assertProblem(service(`  trafficDistribution: PreferClose\n${oneTcpPort}`), `${PREFIX}spec.trafficDistribution: not supported yet`);
});

test('Service: cluster IP and IP family errors', () => {
  assertProblem(service(`  clusterIP: 10.96.0.300\n${oneTcpPort}`), `${PREFIX}spec.clusterIP: must be an IP address (or "None" for a headless service), got "10.96.0.300"`);
  assertProblem(service(`  clusterIP: 010.96.0.1\n${oneTcpPort}`), /spec\.clusterIP: must be an IP address .*got "010\.96\.0\.1"/);
  assertProblem(service(`  clusterIPs: [10.96.0.1, "fe80::1%eth0"]\n${oneTcpPort}`), /spec\.clusterIPs\[1\]: must be an IP address/);
  assertProblem(service(`  clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.2]\n${oneTcpPort}`), `${PREFIX}spec.clusterIPs[0]: must be the same as spec.clusterIP ("10.96.0.1"), got "10.96.0.2"`);
  assertProblem(service(`  clusterIPs: [10.96.0.1, 10.96.0.2]\n${oneTcpPort}`), `${PREFIX}spec.clusterIPs[1]: must be of the other IP family than 10.96.0.1 (both are IPv4)`);
  assertProblem(service(`  clusterIPs: [10.96.0.1, "fd00::1", "fd00::2"]\n${oneTcpPort}`), `${PREFIX}spec.clusterIPs: must have at most 2 addresses (one per IP family), got 3`);
  assertProblem(service(`  clusterIPs: [None, 10.96.0.1]\n${oneTcpPort}`), `${PREFIX}spec.clusterIPs[1]: must not be set when spec.clusterIPs[0] is "None" (headless)`);
  assertProblem(service(`  clusterIPs: [10.96.0.1, None]\n${oneTcpPort}`), `${PREFIX}spec.clusterIPs[1]: "None" (headless) may only be the first entry`);
  assertProblem(service(`  type: NodePort\n  clusterIP: None\n${oneTcpPort}`), `${PREFIX}spec.clusterIP: "None" (headless) is not allowed for NodePort services`);
  assertProblem(service(`  clusterIP: 10.96.0.1\n  ipFamilies: [IPv6]\n${oneTcpPort}`), `${PREFIX}spec.clusterIP: 10.96.0.1 is IPv4 but spec.ipFamilies[0] is IPv6`);
  assertProblem(service(`  ipFamilies: [ipv4]\n${oneTcpPort}`), `${PREFIX}spec.ipFamilies[0]: must be one of IPv4, IPv6, got "ipv4"`);
  assertProblem(service(`  ipFamilies: [IPv4, IPv4]\n  ipFamilyPolicy: PreferDualStack\n${oneTcpPort}`), `${PREFIX}spec.ipFamilies[1]: IPv4 is listed twice`);
  assertProblem(service(`  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: SingleStack\n${oneTcpPort}`), `${PREFIX}spec.ipFamilyPolicy: must be PreferDualStack or RequireDualStack when spec.ipFamilies has two families`);
  assertProblem(service(`  clusterIPs: [10.96.0.1, "fd00::1"]\n  ipFamilyPolicy: SingleStack\n${oneTcpPort}`), `${PREFIX}spec.ipFamilyPolicy: must be PreferDualStack or RequireDualStack when spec.clusterIPs has two addresses`);
  assertProblem(service(`  ipFamilyPolicy: DualStack\n${oneTcpPort}`), `${PREFIX}spec.ipFamilyPolicy: must be one of SingleStack, PreferDualStack, RequireDualStack, got "DualStack"`);
});

test('Service: affinity, traffic policy and annotation errors', () => {
  assertProblem(service(`  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n${oneTcpPort}`),
    `${PREFIX}spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be a whole number of seconds 1-86400, got 0`);
  assertProblem(service(`  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}\n${oneTcpPort}`), /timeoutSeconds: must be a whole number of seconds 1-86400, got 86401/);
  assertProblem(service(`  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: "60"}}\n${oneTcpPort}`), /timeoutSeconds: must be a whole number of seconds 1-86400, got "60"/);
  assertProblem(service(`  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n${oneTcpPort}`), `${PREFIX}spec.sessionAffinityConfig: must not be set when spec.sessionAffinity is None`);
  assertProblem(service(`  sessionAffinity: Client\n${oneTcpPort}`), `${PREFIX}spec.sessionAffinity: must be one of None, ClientIP, got "Client"`);
  assertProblem(service(`  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeout: 60}}\n${oneTcpPort}`), `${PREFIX}spec.sessionAffinityConfig.clientIP.timeout: unknown field`);
  assertProblem(service(`  externalTrafficPolicy: Local\n${oneTcpPort}`), `${PREFIX}spec.externalTrafficPolicy: may only be set for NodePort services (it applies to traffic to node ports)`);
  assertProblem(service(`  type: NodePort\n  externalTrafficPolicy: local\n${oneTcpPort}`), `${PREFIX}spec.externalTrafficPolicy: must be one of Cluster, Local, got "local"`);
  assertProblem(service(`  internalTrafficPolicy: Node\n${oneTcpPort}`), `${PREFIX}spec.internalTrafficPolicy: must be one of Cluster, Local, got "Node"`);
  const ann = (a: string): string => service(oneTcpPort, `name: web\n  annotations: {${a}}`);
  assertProblem(ann('service.waggle.io/lb-algorithm: round-robin'), `${PREFIX}metadata.annotations["service.waggle.io/lb-algorithm"]: must be one of random, maglev, got "round-robin"`);
  assertProblem(ann('service.cilium.io/lb-algorithm: Maglev'), `${PREFIX}metadata.annotations["service.cilium.io/lb-algorithm"]: must be one of random, maglev, got "Maglev"`);
  assertProblem(ann('service.waggle.io/lb-algorithm: maglev, service.cilium.io/lb-algorithm: random'),
    `${PREFIX}metadata.annotations["service.waggle.io/lb-algorithm"]: "maglev" contradicts service.cilium.io/lb-algorithm: "random"; give one`);
  assertProblem(ann('service.waggle.io/lb-algoritm: maglev'), `${PREFIX}metadata.annotations["service.waggle.io/lb-algoritm"]: unknown Waggle annotation (known: service.waggle.io/lb-algorithm)`);
});

test('Service: every problem of a document is reported, nothing is returned', () => {
  const got = problems(service('  type: NodePort\n  sessionAffinity: Sticky\n  ports: [{port: 0}, {name: b, port: 81, protocol: SCTP}]\n'));
  assert.equal(got.length, 4, got.join('\n'));
  const list: string[] = [];
  assert.equal(convertServiceDocument(parse(service('  ports: [{port: 0}]\n')), list), undefined);
  assert.deepEqual(list, ['spec.ports[0].port: must be a port number 1-65535, got 0'], 'converter problems carry no document prefix');
});

test('documents that are not Services or EndpointSlices, and the location forms', () => {
  assertProblem('[1, 2]', 'svc.yaml document 1: must be a mapping with apiVersion and kind, got a list');
  assertProblem('apiVersion: v1\nkind: Endpoints\nmetadata: {name: x}\n', 'svc.yaml document 1 (Endpoints "x"): kind: must be Service (v1) or EndpointSlice (discovery.k8s.io/v1), got "Endpoints"');
  try {
    parseServiceDocument(parse(service('  ports: [{port: 0}]\n')), 'list.yaml document 2 item 3');
    assert.fail('expected a ManifestError');
  } catch (e) {
    assert.ok(e instanceof ManifestError);
    assert.deepEqual(e.problems, ['list.yaml document 2 item 3 (Service "web"): spec.ports[0].port: must be a port number 1-65535, got 0']);
  }
  try {
    parseServiceDocument(parse(service('  ports: [{port: 0}]\n')), { source: 'b.yaml', index: 4 });
    assert.fail('expected a ManifestError');
  } catch (e) {
    assert.ok(e instanceof ManifestError);
    assert.match(e.problems[0] ?? '', /^b\.yaml document 5 \(Service "web"\): /);
  }
});

// ---------------------------------------------------------------- EndpointSlice

test('EndpointSlice: full mapping with condition defaults', () => {
  const s = slice(endpointSlice(`addressType: IPv4
endpoints:
- addresses: [10.200.0.5]
  conditions: {ready: true}
  nodeName: node-a
  zone: z1
  hostname: web-0
  targetRef: {kind: Pod, namespace: prod, name: web-0, uid: u1, resourceVersion: "7"}
- addresses: [10.200.0.6]
- addresses: [10.200.0.7]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.200.0.8]
  conditions: {ready: false}
  hints: {forZones: [{name: z1}]}
ports:
- {name: http, port: 8080, protocol: TCP, appProtocol: http}
- {name: dns, port: 5353, protocol: UDP}
`));
  assert.deepEqual(s, {
    kind: 'EndpointSlice',
    name: 'web-abc',
    namespace: 'prod',
    serviceName: 'web',
    addressType: 'IPv4',
    endpoints: [
      { addresses: ['10.200.0.5'], conditions: { ready: true, serving: true, terminating: false }, hostname: 'web-0', nodeName: 'node-a', zone: 'z1', targetRef: { kind: 'Pod', namespace: 'prod', name: 'web-0', uid: 'u1' } },
      { addresses: ['10.200.0.6'], conditions: { ready: true, serving: true, terminating: false } },
      { addresses: ['10.200.0.7'], conditions: { ready: false, serving: true, terminating: true } },
      { addresses: ['10.200.0.8'], conditions: { ready: false, serving: false, terminating: false } },
    ],
    ports: [
      { name: 'http', protocol: 'TCP', port: 8080, appProtocol: 'http' },
      { name: 'dns', protocol: 'UDP', port: 5353 },
    ],
  });
  assert.deepEqual(JSON.parse(JSON.stringify(s)), s, 'plain JSON data');
});

test('EndpointSlice: IPv6, unnamed port, controller metadata, no endpoints', () => {
  const s = slice(endpointSlice(`addressType: IPv6
endpoints:
- addresses: ["FD00:200:0:0::5"]
ports: [{port: 80}]
`, `name: web-abc
  generateName: web-
  labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
  ownerReferences: [{apiVersion: v1, kind: Service, name: web, uid: x}]`));
  assert.equal(s.namespace, 'default');
  assert.deepEqual(s.endpoints[0]?.addresses, ['fd00:200::5']);
  assert.deepEqual(s.ports, [{ name: '', protocol: 'TCP', port: 80 }]);
  const empty = slice(endpointSlice('addressType: IPv4\nendpoints:\nports:\n'));
  assert.deepEqual([empty.endpoints, empty.ports], [[], []]);
});

test('EndpointSlice: errors name document, kind, name and field', () => {
  const e = (body: string, expected: RegExp | string, meta?: string): void => assertProblem(endpointSlice(body, meta), expected);
  e('addressType: FQDN\n', `${SLICE_PREFIX}addressType: FQDN is not supported (Waggle load-balances to IPv4 and IPv6 addresses)`);
  e('addressType: ipv4\n', `${SLICE_PREFIX}addressType: must be one of IPv4, IPv6, got "ipv4"`);
  e('endpoints: []\n', `${SLICE_PREFIX}addressType: required`);
  e('addressType: IPv4\n', `${SLICE_PREFIX}metadata.labels["kubernetes.io/service-name"]: required: the name of the Service these are the endpoints of`, 'name: web-abc');
  e('addressType: IPv4\n', /metadata\.labels\["kubernetes\.io\/service-name"\]: must be a DNS-1035 label.* \(a Service name\), got "Web"/, 'name: web-abc\n  labels: {kubernetes.io/service-name: Web}');
  e('addressType: IPv4\n', /\(EndpointSlice "Web_1"\): metadata\.name: must be a DNS subdomain/, 'name: Web_1\n  labels: {kubernetes.io/service-name: web}');
  e('addressType: IPv4\nendpoints: [{addresses: []}]\n', `${SLICE_PREFIX}endpoints[0].addresses: must have at least one address`);
  e('addressType: IPv4\nendpoints: [{addresses: ["fd00::1"]}]\n', `${SLICE_PREFIX}endpoints[0].addresses[0]: must be an IPv4 address (the slice's addressType), got "fd00::1"`);
  e('addressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]\n', `${SLICE_PREFIX}endpoints[0].addresses[0]: must be an IPv6 address (the slice's addressType), got "10.0.0.1"`);
  e('addressType: IPv4\nendpoints: [{addresses: [10.0.0.256]}]\n', /endpoints\[0\]\.addresses\[0\]: must be an IPv4 address .*got "10\.0\.0\.256"/);
  e('addressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\n', `${SLICE_PREFIX}endpoints[0].addresses[0]: 127.0.0.1 is in the loopback range 127.0.0.0/8: not a valid endpoint address`);
  e('addressType: IPv4\nendpoints: [{addresses: [169.254.1.1]}]\n', /169\.254\.1\.1 is in the link-local range 169\.254\.0\.0\/16/);
  e('addressType: IPv4\nendpoints: [{addresses: [224.0.0.5]}]\n', /224\.0\.0\.5 is in the link-local multicast range/);
  e('addressType: IPv4\nendpoints: [{addresses: [0.0.0.0]}]\n', /0\.0\.0\.0 is the unspecified address/);
  e('addressType: IPv6\nendpoints: [{addresses: ["::1"]}]\n', /::1 is the loopback address/);
  e('addressType: IPv6\nendpoints: [{addresses: ["fe80::1"]}]\n', /fe80::1 is in the link-local range fe80::\/10/);
  e('addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: "yes"}}]\n', `${SLICE_PREFIX}endpoints[0].conditions.ready: must be a boolean, got string`);
  e('addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {healthy: true}}]\n', `${SLICE_PREFIX}endpoints[0].conditions.healthy: unknown field`);
  e('addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], nodeName: Node_A}]\n', /endpoints\[0\]\.nodeName: must be a DNS subdomain.* \(a node name\)/);
  e('addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hostname: web.0}]\n', /endpoints\[0\]\.hostname: must be a DNS label/);
  e('addressType: IPv4\nports: [{name: http}]\n', `${SLICE_PREFIX}ports[0].port: required: Waggle needs the backends' port number (kube-proxy ignores a slice port without one, too)`);
  e('addressType: IPv4\nports: [{name: http, port: 0}]\n', `${SLICE_PREFIX}ports[0].port: must be a port number 1-65535, got 0`);
  e('addressType: IPv4\nports: [{name: http, port: 80, protocol: SCTP}]\n', `${SLICE_PREFIX}ports[0].protocol: SCTP is not supported yet (TCP or UDP)`);
  e('addressType: IPv4\nports: [{name: http, port: 80}, {name: http, port: 81}]\n', `${SLICE_PREFIX}ports[1].name: "http" is already the name of ports[0]`);
  e('addressType: IPv4\nports: [{port: 80}, {port: 81}]\n', `${SLICE_PREFIX}ports[1].name: "" is already the name of ports[0]`);
  e('addressType: IPv4\nports: [{name: HTTP, port: 80}]\n', /ports\[0\]\.name: must be a DNS label/);
  e('addressType: IPv4\nendpoint: []\n', `${SLICE_PREFIX}endpoint: unknown field`);
  assertProblem('apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: web-abc}\naddressType: IPv4\n',
    `${SLICE_PREFIX}apiVersion: must be "discovery.k8s.io/v1", got "discovery.k8s.io/v1beta1"`);
});

// ---------------------------------------------------------------- checkServiceSet

const OPTS: ServiceSetOptions = { serviceCidrs: ['10.96.0.0/16', 'fd00:96::/112'], nodePortRange: [30000, 32767] };

function mkSvc(name: string, spec: string, ns = 'default'): ServiceSpec {
  return svc(service(spec, `name: ${name}\n  namespace: ${ns}`));
}

function mkSlice(name: string, service_: string, body: string, ns = 'default'): EndpointSliceSpec {
  return slice(endpointSlice(body, `name: ${name}\n  namespace: ${ns}\n  labels: {kubernetes.io/service-name: ${service_}}`));
}

test('checkServiceSet: a consistent set has no problems', () => {
  const a = mkSvc('a', '  clusterIP: 10.96.0.10\n  selector: {app: a}\n  ports: [{name: http, port: 80, targetPort: http}, {name: dns, port: 53, protocol: UDP}]\n');
  const b = mkSvc('b', '  type: NodePort\n  clusterIPs: [10.96.0.11, "fd00:96::11"]\n  ports: [{name: dns, port: 53, protocol: UDP, nodePort: 30053}, {name: dns-tcp, port: 53, nodePort: 30053}]\n');
  const c = mkSvc('c', '  ipFamilyPolicy: PreferDualStack\n  selector: {app: c}\n  ports: [{port: 80}]\n');
  const h = mkSvc('h', '  clusterIP: None\n  selector: {app: h}\n');
  const sa = mkSlice('a-1', 'a', 'addressType: IPv4\nendpoints: [{addresses: [10.200.0.5]}]\nports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]\n');
  assert.deepEqual(checkServiceSet([a, b, c, h], [sa], OPTS), { errors: [], warnings: [] });
  // PreferDualStack's second family may be missing from the agent's CIDRs.
  assert.deepEqual(checkServiceSet([c], [], { ...OPTS, serviceCidrs: ['10.96.0.0/16'] }), { errors: [], warnings: [] });
});

test('checkServiceSet: cluster IP range, reuse and families', () => {
  const out = mkSvc('out', '  clusterIP: 10.0.0.1\n  ports: [{port: 80}]\n');
  const net = mkSvc('net', '  clusterIP: 10.96.0.0\n  ports: [{port: 80}]\n');
  const bc = mkSvc('bc', '  clusterIP: 10.96.255.255\n  ports: [{port: 80}]\n');
  const a = mkSvc('a', '  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n');
  const b = mkSvc('b', '  clusterIPs: ["fd00:96::1", 10.96.0.10]\n  ports: [{port: 8080}]\n', 'other');
  const v6 = mkSvc('v6', '  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n');
  const dual = mkSvc('dual', '  ipFamilyPolicy: RequireDualStack\n  ports: [{port: 80}]\n');
  const r = checkServiceSet([out, net, bc, a, b], [], OPTS);
  assert.deepEqual(r.errors, [
    'Service "default/out": spec.clusterIP: 10.0.0.1 is outside the service CIDRs (10.96.0.0/16, fd00:96::/112)',
    'Service "default/net": spec.clusterIP: 10.96.0.0 is the network address of 10.96.0.0/16 (reserved)',
    'Service "default/bc": spec.clusterIP: 10.96.255.255 is the broadcast address of 10.96.0.0/16 (reserved)',
    'Service "other/b": spec.clusterIPs[1]: 10.96.0.10 is already the cluster IP of Service "default/a"',
  ]);
  assert.deepEqual(checkServiceSet([v6, dual, a], [], { ...OPTS, serviceCidrs: ['10.96.0.0/16'] }).errors, [
    'Service "default/v6": spec.ipFamilies: IPv6 is requested but no service CIDR is IPv6 (service CIDRs: 10.96.0.0/16)',
    'Service "default/dual": spec.ipFamilies: IPv6 is requested (RequireDualStack) but no service CIDR is IPv6 (service CIDRs: 10.96.0.0/16)',
  ]);
  // Headless services need no service CIDR.
  assert.deepEqual(checkServiceSet([mkSvc('h', '  clusterIP: None\n  ipFamilies: [IPv6]\n')], [], { ...OPTS, serviceCidrs: ['10.96.0.0/16'] }).errors, []);
});

test('checkServiceSet: node ports (range, one service per node port)', () => {
  const a = mkSvc('a', '  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n');
  const b = mkSvc('b', '  type: NodePort\n  ports: [{name: x, port: 81, nodePort: 31000}, {name: y, port: 82, protocol: UDP, nodePort: 30080}]\n');
  const c = mkSvc('c', '  type: NodePort\n  ports: [{port: 80, nodePort: 8080}]\n');
  assert.deepEqual(checkServiceSet([a, b, c], [], OPTS).errors, [
    'Service "default/b": spec.ports[1].nodePort: 30080 is already the node port of Service "default/a" (spec.ports[0])',
    'Service "default/c": spec.ports[0].nodePort: 8080 is outside the node-port range 30000-32767',
  ]);
  assert.deepEqual(checkServiceSet([c], [], { ...OPTS, nodePortRange: [8000, 9000] }).errors, []);
});

test('checkServiceSet: duplicates, document locations, named targetPorts', () => {
  const a1 = mkSvc('a', '  selector: {app: a}\n  ports: [{port: 80, targetPort: http}]\n');
  const a2 = mkSvc('a', '  ports: [{port: 81}]\n');
  const where = new Map<ServiceResource, string>([[a2, 'new.yaml document 3']]);
  const r = checkServiceSet([a1, a2], [], { ...OPTS, locate: (x) => where.get(x) });
  assert.deepEqual(r.errors, [
    'new.yaml document 3 (Service "a"): defines the same Service as Service "default/a"',
    'Service "default/a": spec.ports[0].targetPort: the named port "http" can only be resolved by an EndpointSlice of this service, and there is none (endpoints selected by labels have no named ports); give the port number',
  ]);
  // With a slice, the named port is resolved by it; without a selector, slices are expected later.
  const s = mkSlice('a-1', 'a', 'addressType: IPv4\nports: [{port: 8080}]\n');
  assert.deepEqual(checkServiceSet([a1], [s], OPTS), { errors: [], warnings: [] });
  assert.deepEqual(checkServiceSet([mkSvc('n', '  ports: [{port: 80, targetPort: http}]\n')], [], OPTS), { errors: [], warnings: [] });
  assert.deepEqual(checkServiceSet([], [s, s], OPTS).errors, ['EndpointSlice "default/a-1": defines the same EndpointSlice as EndpointSlice "default/a-1"']);
});

test('checkServiceSet: warnings for endpoints nothing uses and ports without backends', () => {
  const a = mkSvc('a', '  ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]\n');
  const h = mkSvc('h', '  clusterIP: None\n  ports: [{name: x, port: 80}]\n');
  const s1 = mkSlice('a-1', 'a', 'addressType: IPv4\nports: [{name: http, port: 8080}, {name: dns, port: 53}, {name: metrics, port: 9090, protocol: UDP}]\n');
  const s6 = mkSlice('a-6', 'a', 'addressType: IPv6\nports: [{name: http, port: 8080}]\n');
  const orphan = mkSlice('zz-1', 'zz', 'addressType: IPv4\n', 'prod');
  const hs = mkSlice('h-1', 'h', 'addressType: IPv4\nports: [{name: y, port: 1}]\n');
  const where = new Map<ServiceResource, string>([[s1, 'svc.yaml document 2']]);
  const r = checkServiceSet([a, h], [s1, s6, orphan, hs], { ...OPTS, locate: (x) => where.get(x) });
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.warnings, [
    'Service "default/a": spec.ports[1]: "dns" 53/UDP: none of its EndpointSlices has a port named "dns" (UDP), so it has no backends',
    'svc.yaml document 2 (EndpointSlice "a-1"): ports[1]: Service "default/a" has no port named "dns" (TCP): ignored',
    'svc.yaml document 2 (EndpointSlice "a-1"): ports[2]: Service "default/a" has no port named "metrics" (UDP): ignored',
    'EndpointSlice "default/a-6": addressType: IPv6, but Service "default/a" has only IPv4: its endpoints are unused',
    'EndpointSlice "prod/zz-1": no Service "zz" in namespace "prod": its endpoints are unused until there is one',
  ]);
});

test('slicePortFor: matches by name and protocol', () => {
  const s = mkSlice('a-1', 'a', 'addressType: IPv4\nports: [{name: dns, port: 5353, protocol: UDP}, {name: dns-tcp, port: 5354}]\n');
  assert.deepEqual(slicePortFor({ name: 'dns', protocol: 'UDP' }, s), { name: 'dns', protocol: 'UDP', port: 5353 });
  assert.equal(slicePortFor({ name: 'dns', protocol: 'TCP' }, s), undefined);
  assert.equal(slicePortFor({ name: '', protocol: 'TCP' }, s), undefined);
});

test('checkServiceSet: bad service CIDRs are a configuration error', () => {
  assert.throws(() => checkServiceSet([], [], { ...OPTS, serviceCidrs: ['10.96.0.1/16'] }), /host bits set/);
});
