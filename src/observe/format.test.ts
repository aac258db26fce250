import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compactLine, compactLostLine, createPrinter, dictBlock, DICT_SEPARATOR, formatTable, useColor } from './format.js';
import { compactLine as hubbleCompactLine, type HubbleFlow, type HubbleRecord } from './hubble.js';

const forwarded: HubbleFlow = {
  time: '2026-11-25T13:14:33.882Z',
  uuid: 'u1',
  verdict: 'FORWARDED',
  IP: { source: '10.201.0.3', destination: '10.201.0.2', ipVersion: 'IPv4' },
  l4: { TCP: { source_port: 60102, destination_port: 8080, flags: { SYN: true } } },
  source: { ID: 2, namespace: 'demo', labels: ['k8s:app=client'], pod_name: 'client-1' },
  destination: { ID: 1, namespace: 'demo', labels: ['k8s:app=web'], pod_name: 'web' },
  Type: 'L3_L4',
  node_name: 'node-1',
  event_type: { type: 4 },
  traffic_direction: 'EGRESS',
  trace_observation_point: 'TO_ENDPOINT',
  is_reply: false,
  Summary: 'TCP Flags: SYN',
};

const dropped: HubbleFlow = {
  time: '2026-11-25T13:14:35.833Z',
  uuid: 'u2',
  verdict: 'DROPPED',
  drop_reason: 181,
  drop_reason_desc: 'POLICY_DENY',
  IP: { source: 'fd00:201::5', destination: '2001:db8::1', ipVersion: 'IPv6' },
  l4: { UDP: { source_port: 5353, destination_port: 53 } },
  source: { ID: 4, namespace: 'demo', labels: ['k8s:app=outsider'], pod_name: 'outsider' },
  destination: { identity: 2, labels: ['reserved:world'] },
  Type: 'L3_L4',
  egress_denied_by: [{ name: 'no-world', kind: 'CiliumClusterwideNetworkPolicy', labels: [] }],
  node_name: 'node-2',
  event_type: { type: 1, sub_type: 181 },
  traffic_direction: 'EGRESS',
  Summary: 'UDP',
};

const policyVerdict: HubbleFlow = {
  ...forwarded,
  uuid: 'u3',
  event_type: { type: 5 },
  policy_match_type: 2,
  traffic_direction: 'INGRESS',
  trace_observation_point: undefined,
  ingress_allowed_by: [{ name: 'allow-web', namespace: 'demo', kind: 'CiliumNetworkPolicy', labels: [] }],
};

const rec = (flow: HubbleFlow): HubbleRecord => ({ flow, node_name: flow.node_name, time: flow.time });
const lost: HubbleRecord = { lost_events: { source: 'OBSERVER_EVENTS_QUEUE', num_events_lost: 7 }, node_name: 'node-1', time: '2026-11-25T13:14:36.000Z' };

const ESC = '\x1b[';
const green = (s: string): string => `${ESC}32m${s}${ESC}0m`;
const red = (s: string): string => `${ESC}31m${s}${ESC}0m`;
const yellow = (s: string): string => `${ESC}33m${s}${ESC}0m`;
const cyan = (s: string): string => `${ESC}36m${s}${ESC}0m`;

test('compact: as hubble observe prints it, and hubble.ts still exports it', () => {
  const line = '2026-11-25 13:14:33.882: demo/client-1 (10.201.0.3:60102) -> demo/web (10.201.0.2:8080) to-endpoint FORWARDED (TCP Flags: SYN)';
  assert.equal(compactLine(forwarded), line);
  assert.equal(hubbleCompactLine(forwarded), line);
  assert.equal(compactLine(dropped),
    '2026-11-25 13:14:35.833: demo/outsider ([fd00:201::5]:5353) -> [2001:db8::1]:53 drop DROPPED (POLICY_DENY) by CiliumClusterwideNetworkPolicy no-world (UDP)');
  assert.equal(compactLine(policyVerdict),
    '2026-11-25 13:14:33.882: demo/client-1 (10.201.0.3:60102) -> demo/web (10.201.0.2:8080) policy-verdict:L3-L4 INGRESS ALLOWED by CiliumNetworkPolicy demo/allow-web (TCP Flags: SYN)');
  const arp: HubbleFlow = { ...forwarded, IP: undefined, l4: undefined, source: undefined, destination: undefined, Summary: 'ARP' };
  assert.equal(compactLine(arp), '2026-11-25 13:14:33.882: (no IP) -> (no IP) to-endpoint FORWARDED (ARP)');
});

test('compact with colour: verdicts green and red, endpoints and addresses cyan, ports yellow, lost events yellow', () => {
  assert.equal(compactLine(forwarded, { color: true }),
    `2026-11-25 13:14:33.882: ${cyan('demo/client-1')} (${cyan('10.201.0.3')}:${yellow('60102')}) -> ${cyan('demo/web')} (${cyan('10.201.0.2')}:${yellow('8080')}) to-endpoint ${green('FORWARDED')} (TCP Flags: SYN)`);
  assert.equal(compactLine(dropped, { color: true }),
    `2026-11-25 13:14:35.833: ${cyan('demo/outsider')} ([${cyan('fd00:201::5')}]:${yellow('5353')}) -> [${cyan('2001:db8::1')}]:${yellow('53')} drop ${red('DROPPED (POLICY_DENY)')} by CiliumClusterwideNetworkPolicy no-world (UDP)`);
  assert.match(compactLine(policyVerdict, { color: true }), new RegExp(`INGRESS ${green('ALLOWED').replace(/\[/g, '\\[')} by`));
  assert.equal(compactLostLine(lost as Extract<HubbleRecord, { lost_events: unknown }>, { color: true }),
    `2026-11-25 13:14:36.000: ${yellow('7 events lost (OBSERVER_EVENTS_QUEUE)')}`);
  assert.ok(!compactLine(forwarded).includes(ESC), 'no colour unless asked');
});

test('compact with the node name, as hubble prints it', () => {
  assert.match(compactLine(forwarded, { nodeName: true }), /^2026-11-25 13:14:33\.882 \[node-1\]: demo\/client-1 /);
  const p = createPrinter('compact', { nodeName: true });
  assert.equal(p.record(lost), '2026-11-25 13:14:36.000 [node-1]: 7 events lost (OBSERVER_EVENTS_QUEUE)\n');
  assert.equal(p.end(), '');
});

test('json: one record per line, exactly as received, lost events too', () => {
  const p = createPrinter('json', { color: true, nodeName: true });
  assert.equal(p.record(rec(forwarded)), `${JSON.stringify(rec(forwarded))}\n`);
  assert.deepEqual(JSON.parse(p.record(lost)), lost);
  assert.ok(!p.record(rec(dropped)).includes(ESC), 'never coloured');
  assert.equal(p.end(), '');
});

test('table: a header and columns as wide as their widest value', () => {
  const p = createPrinter('table');
  assert.equal(p.record(rec(forwarded)), '', 'collected until the end');
  p.record(rec(dropped));
  p.record(lost);
  assert.equal(p.end(), [
    'TIMESTAMP                SOURCE                              DESTINATION                 TYPE         VERDICT                SUMMARY',
    '2026-11-25 13:14:33.882  demo/client-1 (10.201.0.3:60102)    demo/web (10.201.0.2:8080)  to-endpoint  FORWARDED              TCP Flags: SYN',
    '2026-11-25 13:14:35.833  demo/outsider ([fd00:201::5]:5353)  [2001:db8::1]:53            drop         DROPPED (POLICY_DENY)  UDP; by CiliumClusterwideNetworkPolicy no-world',
    '2026-11-25 13:14:36.000  OBSERVER_EVENTS_QUEUE                                           EVENTS LOST                         7 events lost',
    '',
  ].join('\n'));
  assert.equal(formatTable([]), '', 'nothing at all without records');
});

test('table with the node name and colour: the escapes do not count towards the widths', () => {
  const plain = formatTable([rec(forwarded), rec(dropped)], { nodeName: true }).split('\n');
  const coloured = formatTable([rec(forwarded), rec(dropped)], { nodeName: true, color: true }).split('\n');
  assert.match(plain[0]!, /^TIMESTAMP {16}NODE {4}SOURCE {2}/);
  assert.match(plain[1]!, /^2026-11-25 13:14:33\.882 {2}node-1 {2}demo\/client-1/);
  assert.match(plain[2]!, /^2026-11-25 13:14:35\.833 {2}node-2 {2}demo\/outsider/);
  const strip = (s: string): string => s.split(ESC).map((part, i) => (i === 0 ? part : part.replace(/^\d+m/, ''))).join('');
  assert.deepEqual(coloured.map(strip), plain);
  assert.ok(coloured[1]!.includes(green('FORWARDED')));
  assert.ok(coloured[2]!.includes(red('DROPPED (POLICY_DENY)')));
});

test('table while following: the header and each row at once, columns widen for long values', () => {
  const p = createPrinter('table', { streaming: true });
  const first = p.record(rec(forwarded)).split('\n');
  assert.equal(first.length, 3);
  assert.equal(first[0], `${'TIMESTAMP'.padEnd(23)}  ${'SOURCE'.padEnd(36)}  ${'DESTINATION'.padEnd(36)}  ${'TYPE'.padEnd(13)}  ${'VERDICT'.padEnd(9)}  SUMMARY`);
  assert.equal(first[1], `2026-11-25 13:14:33.882  ${'demo/client-1 (10.201.0.3:60102)'.padEnd(36)}  ${'demo/web (10.201.0.2:8080)'.padEnd(36)}  to-endpoint    FORWARDED  TCP Flags: SYN`);
  const second = p.record(rec(dropped));
  assert.match(second, /^2026-11-25 13:14:35\.833 {2}demo\/outsider .* drop {11}DROPPED \(POLICY_DENY\) {2}UDP; by /);
  assert.ok(!second.includes('TIMESTAMP'), 'one header');
  const third = p.record(rec(forwarded));
  assert.match(third, / FORWARDED {14}TCP Flags: SYN\n$/, 'the verdict column stays as wide as it grew');
  assert.equal(p.end(), '');
});

test('dict: one KEY: value per line, records separated by dashes', () => {
  const p = createPrinter('dict', { nodeName: true });
  const out = p.record(rec(forwarded)) + p.record(rec(dropped)) + p.record(lost);
  assert.equal(out, [
    '  TIMESTAMP: 2026-11-25 13:14:33.882',
    '       NODE: node-1',
    '     SOURCE: demo/client-1 (10.201.0.3:60102)',
    'DESTINATION: demo/web (10.201.0.2:8080)',
    '       TYPE: to-endpoint',
    '    VERDICT: FORWARDED',
    '    SUMMARY: TCP Flags: SYN',
    DICT_SEPARATOR,
    '  TIMESTAMP: 2026-11-25 13:14:35.833',
    '       NODE: node-2',
    '     SOURCE: demo/outsider ([fd00:201::5]:5353)',
    'DESTINATION: [2001:db8::1]:53',
    '       TYPE: drop',
    '    VERDICT: DROPPED (POLICY_DENY)',
    '     POLICY: CiliumClusterwideNetworkPolicy no-world',
    '    SUMMARY: UDP',
    DICT_SEPARATOR,
    '  TIMESTAMP: 2026-11-25 13:14:36.000',
    '       NODE: node-1',
    '     SOURCE: OBSERVER_EVENTS_QUEUE',
    '       TYPE: EVENTS LOST',
    '    SUMMARY: 7 events lost',
    '',
  ].join('\n'));
  assert.equal(p.end(), '');
  assert.ok(!dictBlock(rec(forwarded)).includes('NODE'), 'no node name unless asked');
  const coloured = dictBlock(rec(dropped), { color: true });
  assert.ok(coloured.includes(`    VERDICT: ${red('DROPPED (POLICY_DENY)')}\n`));
  assert.ok(coloured.includes(`     SOURCE: ${cyan('demo/outsider')} ([${cyan('fd00:201::5')}]:${yellow('5353')})\n`));
});

test('colour: auto on a terminal unless NO_COLOR or a dumb terminal; always and never say so', () => {
  assert.equal(useColor('auto', true, {}), true);
  assert.equal(useColor('auto', false, {}), false);
  assert.equal(useColor('auto', true, { NO_COLOR: '1' }), false);
  assert.equal(useColor('auto', true, { NO_COLOR: '' }), true, 'an empty NO_COLOR does not count');
  assert.equal(useColor('auto', true, { TERM: 'dumb' }), false);
  assert.equal(useColor('always', false, { NO_COLOR: '1' }), true);
  assert.equal(useColor('never', true, {}), false);
});
