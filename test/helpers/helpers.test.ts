import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { mountTempBpffs } from './bpffs.js';
import { createCgroup, findCgroup2Mount } from './cgroup.js';
import { addrOf, Cleanup, createNetns, createVethPair, ifindexIn, listNetns } from './netns.js';
import { requireTools, skipUnlessRoot } from './root.js';
import { checkTestAddress, ping, tcpExchange, udpExchange } from './traffic.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

test('Cleanup runs steps in reverse order and survives failing steps', async () => {
  const c = new Cleanup();
  const order: number[] = [];
  c.add(() => { order.push(1); });
  c.add(() => { throw new Error('expected failure (test of Cleanup)'); }, 'failing step');
  c.add(async () => { order.push(3); });
  const origError = console.error;
  console.error = () => {};
  try {
    const errors = await c.run();
    assert.equal(errors.length, 1);
  } finally {
    console.error = origError;
  }
  assert.deepEqual(order, [3, 1]);
  assert.deepEqual(await c.run(), []);
});

test('traffic helpers refuse addresses outside the test ranges', async () => {
  assert.equal(checkTestAddress('10.199.3.4'), 4);
  assert.equal(checkTestAddress('fd99:1::2'), 6);
  for (const bad of ['8.8.8.8', '10.198.0.1', '2001:db8::1', 'fd98::1', 'localhost']) {
    assert.throws(() => checkTestAddress(bad), /refusing/);
  }
});

test('two namespaces joined by a veth carry IPv4/IPv6 ping, TCP and UDP, then clean up', async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, 'ip', 'ping')) return;

  const a = createNetns('wgl-a');
  cleanup.add(() => a.remove(), `netns ${a.name}`);
  const b = createNetns('wgl-b');
  cleanup.add(() => b.remove(), `netns ${b.name}`);
  assert.ok(existsSync(a.path) && existsSync(b.path));

  const veth = createVethPair({
    a: { netns: a, name: 'wgl0', addrs: ['10.199.1.1/24', 'fd99:1::1/64'] },
    b: { netns: b, name: 'wgl1', addrs: ['10.199.1.2/24', 'fd99:1::2/64'] },
  });
  cleanup.add(() => veth.remove(), 'veth wgl0/wgl1');
  assert.ok(ifindexIn(a, 'wgl0') > 0);
  assert.ok(ifindexIn(b, 'wgl1') > 0);
  assert.match(a.exec(['ip', '-o', 'addr', 'show', 'dev', 'wgl0']), /10\.199\.1\.1\/24/);

  const v4 = addrOf(veth.b.addrs[0] ?? '');
  const v6 = addrOf(veth.b.addrs[1] ?? '');
  assert.equal(await ping(a, v4, 3), 3);
  assert.equal(await ping(a, v6, 3), 3);
  assert.equal(await ping(b, '10.199.1.1', 2), 2);

  assert.equal(await tcpExchange(a, b, v4, 7001, 100_000), 100_000);
  assert.equal(await tcpExchange(a, b, v6, 7001, 4096), 4096);
  assert.equal(await udpExchange(a, b, v4, 7002, 5), 5);
  assert.equal(await udpExchange(a, b, v6, 7002, 5, { size: 1200 }), 5);

  // A server that cannot bind (address not assigned) is an error, not a silent 0.
  await assert.rejects(tcpExchange(b, a, '10.199.1.9', 7003, 10), /exited .* before listening/);

  // With b's end down, traffic is lost: the helpers report 0 rather than throwing.
  b.exec(['ip', 'link', 'set', 'wgl1', 'down']);
  assert.equal(await ping(a, v4, 2), 0);
  assert.equal(await tcpExchange(a, b, v4, 7004, 10, { timeoutMs: 1_000 }), 0);
  assert.equal(await udpExchange(a, b, v4, 7005, 2, { timeoutMs: 600 }), 0);

  assert.deepEqual(await cleanup.run(), []);
  const left = listNetns();
  assert.ok(!left.includes(a.name) && !left.includes(b.name), `left over: ${left.join(', ')}`);
  assert.ok(!existsSync(a.path) && !existsSync(b.path));
});

test('cgroup and bpffs helpers create and remove their objects', async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, 'mount', 'umount', 'sleep')) return;

  const mount = findCgroup2Mount();
  assert.match(readFileSync('/proc/self/mounts', 'utf8'), new RegExp(` ${mount} cgroup2 `));
  const cg = createCgroup();
  cleanup.add(() => cg.remove(), `cgroup ${cg.path}`);
  assert.ok(cg.path.startsWith(`${mount}/waggle-test-${process.pid}-`));
  assert.ok(cg.id > 0n);

  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
  cleanup.add(() => { sleeper.kill('SIGKILL'); }, 'sleep process');
  const pid = sleeper.pid;
  assert.ok(pid !== undefined);
  cg.addProcess(pid);
  const rel = cg.path.slice(mount.length);
  assert.match(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), new RegExp(`^0::${rel}$`, 'm'));
  cg.remove(); // the sleeper still runs: it must be moved out first
  assert.ok(!existsSync(cg.path));
  assert.doesNotMatch(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), new RegExp(`^0::${rel}$`, 'm'));

  const fs = mountTempBpffs();
  cleanup.add(() => fs.unmount(), `bpffs ${fs.path}`);
  assert.match(readFileSync('/proc/self/mounts', 'utf8'), new RegExp(`^bpf ${fs.path} bpf `, 'm'));
  fs.unmount();
  assert.doesNotMatch(readFileSync('/proc/self/mounts', 'utf8'), new RegExp(` ${fs.path} `));
  assert.ok(!existsSync(fs.path));
});
