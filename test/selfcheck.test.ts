import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { requireTools, skipUnlessRoot } from './helpers/root.js';
import { CLI } from './helpers/agent.js';

test('waggle selfcheck attaches, counts real traffic, detaches and leaves nothing', (t) => {
  if (skipUnlessRoot(t) || requireTools(t, 'ping', 'nsenter')) return;
  const r = spawnSync(process.execPath, [CLI, 'selfcheck'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `selfcheck failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /traffic A → B: 5\/5 IPv4 pings, 5\/5 IPv6 pings, TCP 65536\/65536 bytes/);
  const icmp = /^\s+ICMP\s+(\d+)\s+\d+\s+(\d+)\s+\d+$/m.exec(r.stdout);
  assert.ok(icmp && Number(icmp[1]) >= 5 && Number(icmp[2]) >= 5, `ICMP counts missing:\n${r.stdout}`);
  assert.match(r.stdout, /✓ detached: 3 more pings passed uncounted/);
  assert.match(r.stdout, /^self-check passed$/m);
  const pid = /waggle-sc-(\d+)-a/.exec(r.stdout)?.[1];
  assert.ok(pid, 'the namespaces are named in the output');
  const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.ok(!netns.includes(`waggle-sc-${pid}-`), `namespaces left behind:\n${netns}`);
  const mounts = spawnSync('cat', ['/proc/self/mounts'], { encoding: 'utf8' }).stdout;
  assert.ok(!mounts.includes('waggle-selfcheck-'), 'the self-check bpffs is still mounted');
});
