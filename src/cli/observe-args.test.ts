import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OBSERVE_FLAGS, parseObserveArgs } from './observe-args.js';
import { UsageError } from './errors.js';
import { encodeFlowQuery, parseFlowQuery } from '../observe/filter.js';

const NOW = Date.parse('2026-01-02T15:00:00Z');
const parse = (...argv: string[]) => parseObserveArgs(argv, NOW);
const include = (...argv: string[]) => parse(...argv).query.include;
const exclude = (...argv: string[]) => parse(...argv).query.exclude;

/** Asserts the arguments fail with a UsageError whose message matches. */
function rejects(argv: string[], message: RegExp): void {
  assert.throws(() => parseObserveArgs(argv, NOW), (err: unknown) => {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    assert.match(err.message, message);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  }, argv.join(' '));
}

test('no arguments: everything kept, compact, colour by terminal', () => {
  assert.deepEqual(parse(), { query: { include: [], exclude: [], follow: false }, output: 'compact', color: 'auto', printNodeName: false });
});

test('each filter flag fills its field', () => {
  const cases: [string[], object][] = [
    [['--from-ip', '10.0.0.1'], { sourceIp: ['10.0.0.1'] }],
    [['--to-ip', '10.0.0.0/24'], { destinationIp: ['10.0.0.0/24'] }],
    [['--ip', 'fd00::/64'], { ip: ['fd00::/64'] }],
    [['--from-endpoint', 'client'], { sourceEndpoint: ['client'] }],
    [['--to-endpoint', 'shop/web'], { destinationEndpoint: ['shop/web'] }],
    [['--endpoint', 'web'], { endpoint: ['web'] }],
    [['--from-pod', 'client'], { sourceEndpoint: ['client'] }],
    [['--to-pod', 'web'], { destinationEndpoint: ['web'] }],
    [['--pod', 'web'], { endpoint: ['web'] }],
    [['--from-label', 'app=client'], { sourceLabel: ['app=client'] }],
    [['--to-label', 'k8s:app in (web,api)'], { destinationLabel: ['k8s:app in (web,api)'] }],
    [['--label', 'app,tier!=db'], { label: ['app,tier!=db'] }],
    [['--from-namespace', 'shop'], { sourceNamespace: ['shop'] }],
    [['--to-namespace', 'shop'], { destinationNamespace: ['shop'] }],
    [['--namespace', 'shop'], { namespace: ['shop'] }],
    [['-n', 'shop'], { namespace: ['shop'] }],
    [['--from-identity', '300'], { sourceIdentity: [300] }],
    [['--to-identity', '2'], { destinationIdentity: [2] }],
    [['--identity', '4294967295'], { identity: [4294967295] }],
    [['--from-port', '40000'], { sourcePort: [40000] }],
    [['--to-port', '80'], { destinationPort: [80] }],
    [['--port', '53'], { port: [53] }],
    [['--protocol', 'tcp'], { protocol: ['tcp'] }],
    [['--verdict', 'DROPPED'], { verdict: ['DROPPED'] }],
    [['--type', 'policy-verdict'], { type: ['policy-verdict'] }],
    [['-t', 'trace:to-endpoint'], { type: ['trace:to-endpoint'] }],
    [['--traffic-direction', 'ingress'], { trafficDirection: ['ingress'] }],
  ];
  for (const [argv, filter] of cases) assert.deepEqual(include(...argv), [filter], argv.join(' '));
});

test('every filter flag in --help is understood', () => {
  const filters = OBSERVE_FLAGS.filter((f) => f.filter);
  assert.equal(filters.length, 22);
  for (const f of OBSERVE_FLAGS) assert.ok(f.description.length > 10, f.long);
});

test('values are case-insensitive where Hubble\'s are', () => {
  assert.deepEqual(include('--verdict', 'dropped', '--protocol', 'TCP', '--traffic-direction', 'Egress', '--type', 'DROP'),
    [{ verdict: ['DROPPED'], protocol: ['tcp'], trafficDirection: ['egress'], type: ['drop'] }]);
});

test('repeating a flag ORs its values; different flags AND in one filter', () => {
  assert.deepEqual(include('--from-ip', '10.0.0.1', '--from-ip', '10.0.0.2'), [{ sourceIp: ['10.0.0.1', '10.0.0.2'] }]);
  assert.deepEqual(include('--verdict', 'DROPPED', '--from-endpoint', 'client', '--verdict', 'FORWARDED', '--to-port', '80'),
    [{ verdict: ['DROPPED', 'FORWARDED'], sourceEndpoint: ['client'], destinationPort: [80] }]);
  assert.deepEqual(include('--port', '80', '--port', '80'), [{ port: [80] }], 'a repeated value once');
  assert.deepEqual(include('--pod', 'a', '--endpoint', 'b'), [{ endpoint: ['a', 'b'] }], 'an alias is the same flag');
});

test('either-end flags combine with one-end flags', () => {
  assert.deepEqual(include('--ip', '10.0.0.1', '--from-ip', '10.0.0.0/8', '--label', 'app=web', '--to-label', 'tier=db', '--identity', '2', '--namespace', 'shop', '--endpoint', 'web', '--port', '443'),
    [{ ip: ['10.0.0.1'], sourceIp: ['10.0.0.0/8'], label: ['app=web'], destinationLabel: ['tier=db'], identity: [2], namespace: ['shop'], endpoint: ['web'], port: [443] }]);
});

test('--not negates the next filter flag only; each negated flag is its own exclude filter', () => {
  const q = parse('--from-endpoint', 'client', '--not', '--verdict', 'FORWARDED', '--to-port', '80', '--not', '--protocol', 'icmp').query;
  assert.deepEqual(q.include, [{ sourceEndpoint: ['client'], destinationPort: [80] }]);
  assert.deepEqual(q.exclude, [{ verdict: ['FORWARDED'] }, { protocol: ['icmp'] }]);
  assert.deepEqual(parse('--not', '--from-ip', '10.0.0.1').query, { include: [], exclude: [{ sourceIp: ['10.0.0.1'] }], follow: false }, 'only exclusions');
  assert.deepEqual(exclude('--not', '--ip', '10.0.0.1', '--not', '--ip', '10.0.0.2'), [{ ip: ['10.0.0.1'] }, { ip: ['10.0.0.2'] }]);
  assert.deepEqual(exclude('--not', '--pod', 'web'), [{ endpoint: ['web'] }]);
  assert.deepEqual(exclude('--not', '-n', 'kube-system'), [{ namespace: ['kube-system'] }]);
});

test('--not may come before any filter flag, in any position, with any spelling', () => {
  assert.deepEqual(parse('-f', '--not', '--type=drop', '-o', 'json').query.exclude, [{ type: ['drop'] }]);
  assert.deepEqual(parse('--not', '-tdrop').query.exclude, [{ type: ['drop'] }]);
  assert.deepEqual(parse('--last', '5', '--not', '--label', 'app=web', '--label', 'app=api').query,
    { include: [{ label: ['app=api'] }], exclude: [{ label: ['app=web'] }], last: 5, follow: false });
});

test('time bounds, count and follow', () => {
  const q = parse('--since', '5m', '--until', '2026-01-02T14:59:00Z', '--last', '20', '--follow').query;
  assert.equal(q.sinceMs, NOW - 5 * 60_000);
  assert.equal(q.untilMs, Date.parse('2026-01-02T14:59:00Z'));
  assert.equal(q.last, 20);
  assert.equal(q.follow, true);
  assert.equal(parse('--since', '1h30m').query.sinceMs, NOW - 90 * 60_000);
  assert.equal(parse('--since', '2026-01-02 10:00:00Z').query.sinceMs, Date.parse('2026-01-02T10:00:00Z'));
  assert.equal(parse('-f').query.follow, true);
  assert.equal(parse('--last', '3', '--last', '7').query.last, 7, 'the last one wins');
});

test('output options', () => {
  assert.equal(parse('-o', 'json').output, 'json');
  assert.equal(parse('-o', 'jsonpb').output, 'json');
  assert.equal(parse('--output=table').output, 'table');
  assert.equal(parse('-odict').output, 'dict');
  assert.equal(parse('-fo', 'table').output, 'table');
  assert.equal(parse('-fo', 'table').query.follow, true);
  assert.equal(parse('--color', 'never').color, 'never');
  assert.equal(parse('--color=always').color, 'always');
  assert.equal(parse('--print-node-name').printNodeName, true);
  assert.equal(parse('--api-socket', '/tmp/w.sock').apiSocket, '/tmp/w.sock');
});

test('the query survives the trip to the agent', () => {
  const q = parse('--from-endpoint', 'shop/client', '--to-port', '80', '--not', '--verdict', 'forwarded', '--since', '10m', '--last', '5', '-f').query;
  const back = parseFlowQuery(encodeFlowQuery(q));
  assert.deepEqual(back, q);
});

test('bad values: one sentence naming the flag and the value', () => {
  rejects(['--from-ip', '10.0.0.300'], /^--from-ip: "10\.0\.0\.300" is not an IP address or CIDR$/);
  rejects(['--to-ip', '10.0.0.0/33'], /^--to-ip: "10\.0\.0\.0\/33" is not an IP address or CIDR$/);
  rejects(['--ip', 'web'], /^--ip: "web" is not an IP address or CIDR$/);
  rejects(['--port', 'http'], /^--port: "http" is not a port number \(0-65535\)$/);
  rejects(['--to-port', '65536'], /^--to-port: "65536" is not a port number/);
  rejects(['--from-port', '-1'], /^--from-port: "-1" is not a port number/);
  rejects(['--verdict', 'ALLOWED'], /^--verdict: unknown verdict "ALLOWED" \(use FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED\)$/);
  rejects(['--type', 'capture'], /^--type: unknown event type "capture" \(use trace, drop, policy-verdict, l7, /);
  rejects(['-t', 'x'], /^-t: unknown event type "x"/);
  rejects(['--protocol', 'quic'], /^--protocol: unknown protocol "quic" \(use tcp, udp, sctp, icmp, icmpv4, icmpv6, http, dns\)$/);
  rejects(['--traffic-direction', 'both'], /^--traffic-direction: unknown traffic direction "both" \(use ingress, egress\)$/);
  rejects(['--from-label', 'app=(x'], /^--from-label: label selector "app=\(x": /);
  rejects(['--label', 'a,,b'], /^--label: label selector "a,,b": empty term$/);
  rejects(['--from-endpoint', 'a/b/c'], /^--from-endpoint: "a\/b\/c" is not an endpoint \(NAME or NAMESPACE\/NAME/);
  rejects(['--pod', 'Web'], /^--pod: "Web" is not an endpoint/);
  rejects(['--namespace', 'Shop'], /^--namespace: "Shop" is not a namespace name/);
  rejects(['--from-identity', 'world'], /^--from-identity: "world" is not a numeric security identity$/);
  rejects(['--identity', '4294967296'], /^--identity: "4294967296" is not a numeric security identity$/);
  rejects(['--to-ip', ''], /^--to-ip needs a value, got an empty one$/);
});

test('bad times, counts and formats', () => {
  rejects(['--since', 'yesterday'], /^--since: "yesterday" is neither a duration \(like 30s, 5m, 1h30m\) nor a timestamp/);
  rejects(['--until', '5 minutes'], /^--until: "5 minutes" is neither a duration/);
  rejects(['--since', '1m', '--until', '5m'], /^--since 1m is after --until 5m: no flow can match$/);
  rejects(['--last', '0'], /^--last must be a positive integer, got "0"$/);
  rejects(['--last', '-3'], /^--last must be a positive integer, got "-3"$/);
  rejects(['--last', 'ten'], /^--last must be a positive integer, got "ten"$/);
  rejects(['-o', 'yaml'], /^unknown output format "yaml" \(use compact, json, table, dict\)$/);
  rejects(['--color', 'sometimes'], /^--color must be auto, always, never, got "sometimes"$/);
});

test('misplaced --not and malformed flags', () => {
  rejects(['--from-ip', '10.0.0.1', '--not'], /^--not must be followed by a filter flag \(like --not --verdict FORWARDED\), but nothing follows it$/);
  rejects(['--not', '--follow'], /^--not must be followed by a filter flag, not --follow$/);
  rejects(['--not', '-o', 'json'], /^--not must be followed by a filter flag, not -o$/);
  rejects(['--not', '--not', '--port', '80'], /^--not --not: two --not in a row; --not negates the one filter flag after it$/);
  rejects(['--not=yes'], /^--not takes no value, got "yes"$/);
  rejects(['--from-ip'], /^--from-ip needs a value \(--from-ip <ip>\)$/);
  rejects(['-o'], /^-o needs a value/);
  rejects(['--pod-name', 'x'], /^unknown option --pod-name \(see waggle observe --help\)$/);
  rejects(['-x'], /^unknown option -x/);
  rejects(['web'], /^waggle observe takes no arguments, got "web" \(filters are flags, like --from-endpoint web\)$/);
  rejects(['--', 'web'], /^waggle observe takes no arguments, got "web"/);
});
