import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { skipUnlessRoot } from './helpers/root.js';
import { CLI } from './helpers/agent.js';
import { hostIfnameFor } from '../src/endpoint/plumbing.js';

test('waggle demo runs end to end and leaves nothing behind', (t) => {
  if (skipUnlessRoot(t)) return;
  const prefix = `wd${process.pid % 100000}`;
  const netnsBefore = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  const r = spawnSync(process.execPath, [CLI, 'demo', '--duration', '3', '--prefix', prefix], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `demo failed:\n${r.stdout}\n${r.stderr}`);
  const web = `demo/${prefix}-web`;
  assert.match(r.stdout, new RegExp(`demo/${prefix}-client-1 \\(10\\.201\\.0\\.\\d+:\\d+\\) -> ${web} \\(10\\.201\\.0\\.\\d+:8080\\) to-endpoint FORWARDED \\(TCP Flags: SYN\\)`));
  assert.match(r.stdout, new RegExp(`demo/${prefix}-client-2 \\(\\[fd00:201::\\d+\\]:\\d+\\) -> ${web} \\(\\[fd00:201::\\d+\\]:8080\\) to-endpoint FORWARDED`));
  assert.match(r.stdout, new RegExp(`demo/${prefix}-client-1 \\(10\\.201\\.0\\.\\d+\\) -> ${web} \\(10\\.201\\.0\\.\\d+\\) drop DROPPED \\(INVALID_SOURCE_IP\\)`));
  assert.match(r.stdout, /agent ready; the web UI \(live service map and flows\) at http:\/\/127\.0\.0\.1:\d+\/ and Prometheus metrics at http:\/\/127\.0\.0\.1:\d+\/metrics/);
  // Observability: flows filtered by the agent, and the drop counters.
  const filtered = r.stdout.slice(r.stdout.indexOf('waggle observe --verdict DROPPED --last 3'));
  const dropLines = filtered.split('\n').slice(1).filter((l) => l.startsWith('  ') && l.includes(' -> '));
  assert.ok(dropLines.length >= 1 && dropLines.length <= 3 && dropLines.every((l) => l.includes('DROPPED')), `filtered drops:\n${filtered}`);
  assert.match(r.stdout, /^ {2}waggle_drop_count_total\{reason="POLICY_DENIED",direction="(INGRESS|EGRESS)"\} [1-9]\d*$/m);
  // The policy step: the outsider gets through before the policy and not after; the drop is a flow.
  assert.match(r.stdout, new RegExp(`before any policy, ${prefix}-outsider \\(app=outsider\\) reaches the web server too: answered 200`));
  assert.match(r.stdout, new RegExp(`${prefix}-outsider tries again: no answer \\(timed out\\)`));
  assert.match(r.stdout, new RegExp(`demo/${prefix}-outsider \\(10\\.201\\.0\\.\\d+:\\d+\\) -> ${web} \\(10\\.201\\.0\\.\\d+:8080\\) drop DROPPED \\(POLICY_DENIED\\)`));
  assert.match(r.stdout, /waggle policy trace .*: DENIED/);
  // The service step: a ClusterIP balanced over both web endpoints, the client's peer is the service address.
  const svc = new RegExp(`${prefix}-client-1 opens 16 connections to http://(10\\.96\\.0\\.\\d+)/: answered by (.*); the peer its sockets saw: (\\S+) `).exec(r.stdout);
  assert.ok(svc, `service step:\n${r.stdout}`);
  assert.match(svc[2]!, new RegExp(`${prefix}-web ×\\d+`));
  assert.match(svc[2]!, new RegExp(`${prefix}-web-2 ×\\d+`));
  assert.equal(svc[3], `${svc[1]}:80`);
  // NodePort from a namespace standing in for another machine: both backends, the client's own address kept.
  const np = new RegExp(`a client outside the node \\(namespace ${prefix}-outside, (10\\.202\\.0\\.\\d+)\\) opens 16 connections to the node port http://10\\.202\\.0\\.1:30080/ through device ${prefix}-ext: answered by (.*); the servers saw (\\S+) `).exec(r.stdout);
  assert.ok(np, `NodePort step:\n${r.stdout}`);
  assert.match(np[2]!, new RegExp(`${prefix}-web ×\\d+`));
  assert.match(np[2]!, new RegExp(`${prefix}-web-2 ×\\d+`));
  assert.equal(np[3], np[1], 'the backends saw the outside client\'s own address');
  const netnsAfter = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.ok(!netnsAfter.includes(prefix), `namespaces left behind:\n${netnsAfter}`);
  assert.equal(netnsAfter.split('\n').filter((l) => l.includes(prefix)).length, netnsBefore.split('\n').filter((l) => l.includes(prefix)).length);
  const links = spawnSync('ip', ['-o', 'link'], { encoding: 'utf8' }).stdout;
  for (const name of ['web', 'web-2', 'client-1', 'client-2', 'outsider']) {
    const ifname = hostIfnameFor('demo-node', `${prefix}-${name}`);
    assert.ok(!links.includes(`${ifname}@`), `veth ${ifname} of ${prefix}-${name} left behind`);
  }
  assert.ok(!links.includes(`${prefix}-ext@`), 'the outside link is left behind');
  const mounts = spawnSync('cat', ['/proc/self/mounts'], { encoding: 'utf8' }).stdout;
  assert.ok(!/waggle-demo-/.test(mounts), 'the demo bpffs is still mounted');
});
