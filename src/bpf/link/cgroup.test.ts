/**
 * cgroup sock_addr links: sock_test translates a virtual address to a local
 * backend for a child process in a test cgroup, and translates it back for
 * getpeername/recvmsg. Loopback only: VIP 127.0.0.2:18080 -> 127.0.0.1:PORT,
 * and [::1]:18080 -> [::1]:PORT, with servers in this process.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { after, describe, test } from 'node:test';
import { Collection } from '../object.js';
import { u32, u64 } from '../codec.js';
import { AttachType } from '../types.js';
import { LinkType, type Link } from './link.js';
import { attachCgroup, sockAddrAttachType, type SockAddrHook } from './cgroup.js';
import { bpfObjectPath } from '../../datapath/objects.js';
import { Cleanup } from '../../../test/helpers/netns.js';
import { createCgroup, findCgroup2Mount } from '../../../test/helpers/cgroup.js';
import { skipUnlessRoot } from '../../../test/helpers/root.js';

const VIP4 = '127.0.0.2';
const BACKEND4 = '127.0.0.1';
const VIP6 = '::1';
const VIP_PORT = 18080;

/** `enum hook` of sock_test.bpf.c; translations are counted at index + HOOK_MAX. */
const HOOK: Record<SockAddrHook, number> = {
  connect4: 0, connect6: 1, sendmsg4: 2, sendmsg6: 3, recvmsg4: 4, recvmsg6: 5, getpeername4: 6, getpeername6: 7,
};
const HOOK_MAX = 8;
const HOOKS_USED: SockAddrHook[] = ['connect4', 'getpeername4', 'connect6', 'getpeername6', 'sendmsg4', 'recvmsg4'];

const cleanup = new Cleanup();
after(() => cleanup.run());

/** Port in network byte order, as the bytes of a `__u16` constant. */
function be16(port: number): Uint8Array {
  return Uint8Array.of(port >> 8, port & 0xff);
}

function ipv4Bytes(addr: string): Uint8Array {
  return Uint8Array.from(addr.split('.').map(Number));
}

const IPV6_LOOPBACK = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);

/** What the child saw for each flow. */
interface TcpResult { peer?: string; localPort?: number; echo?: string; error?: string }
interface UdpResult { from?: string; echo?: string; error?: string }
interface ChildReport { cgroup: string; tcp4: TcpResult; tcp6: TcpResult; udp4: UdpResult }

/** Waits for a line on stdin (sent once the child is in the cgroup), then makes every socket. */
const CHILD = `
const net = require('net');
const dgram = require('dgram');
const fs = require('fs');
const p = JSON.parse(process.argv[1]);
const within = (ms, fn) => new Promise((resolve) => {
  const t = setTimeout(() => resolve({ error: 'timeout' }), ms);
  fn((r) => { clearTimeout(t); resolve(r); });
});
const tcp = (host) => within(3000, (done) => {
  const s = net.connect({ host, port: p.vipPort });
  s.on('connect', () => {
    const r = { peer: s.remoteAddress + ' ' + s.remotePort, localPort: s.localPort };
    s.on('data', (d) => { r.echo = d.toString(); s.destroy(); done(r); });
    s.end('hello');
  });
  s.on('error', (e) => done({ error: e.code || e.message }));
});
const udp = () => within(p.udpWaitMs, (done) => {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => { s.close(); done({ from: r.address + ' ' + r.port, echo: m.toString() }); });
  s.on('error', (e) => done({ error: e.code || e.message }));
  s.send('ping', p.vipPort, p.vip4, (e) => { if (e) done({ error: e.code || e.message }); });
});
process.stdin.once('data', async () => {
  const out = { cgroup: fs.readFileSync('/proc/self/cgroup', 'utf8') };
  out.tcp4 = await tcp(p.vip4);
  out.tcp6 = await tcp(p.vip6);
  out.udp4 = await udp();
  process.stdout.write(JSON.stringify(out) + '\\n');
  process.exit(0);
});
`;

/** Backends in this process (outside the test cgroup, so not translated themselves). */
interface Backends {
  port: number;
  tcp4Peers: number[];
  tcp6Peers: number[];
  udp4Peers: number[];
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: host.includes(':') }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function bindUdp(sock: UdpSocket, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, host, () => {
      sock.off('error', reject);
      resolve();
    });
  });
}

/** TCP echo on 127.0.0.1:P and [::1]:P, UDP echo on 127.0.0.1:P: one port P for all (one backend_port constant). */
async function startBackends(): Promise<Backends> {
  for (let attempt = 0; ; attempt++) {
    const b: Backends = { port: 0, tcp4Peers: [], tcp6Peers: [], udp4Peers: [] };
    const echo = (peers: number[]) => createServer((s) => {
      peers.push(s.remotePort ?? -1);
      s.on('error', () => undefined);
      s.pipe(s);
    });
    const tcp4 = echo(b.tcp4Peers);
    const tcp6 = echo(b.tcp6Peers);
    const udp4 = createSocket('udp4');
    udp4.on('message', (m, r) => {
      b.udp4Peers.push(r.port);
      udp4.send(m, r.port, r.address);
    });
    const close = (): void => {
      tcp4.close();
      tcp6.close();
      try { udp4.close(); } catch { /* not bound */ }
    };
    try {
      await listen(tcp4, BACKEND4, 0);
      const addr = tcp4.address();
      if (addr === null || typeof addr === 'string') throw new Error('no TCP port');
      b.port = addr.port;
      await listen(tcp6, VIP6, b.port);
      await bindUdp(udp4, BACKEND4, b.port);
      cleanup.add(close, `backends on port ${b.port}`);
      return b;
    } catch (err) {
      close();
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 10) throw err;
    }
  }
}

/** Starts the child, moves it into the cgroup, lets it connect, returns its report. */
async function runChild(cg: { addProcess(pid: number): void }): Promise<ChildReport> {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const params = { vip4: VIP4, vip6: VIP6, vipPort: VIP_PORT, udpWaitMs: 1500 };
  const child: ChildProcess = spawn(process.execPath, ['-e', CHILD, JSON.stringify(params)], { stdio: ['pipe', 'pipe', 'pipe'], env });
  cleanup.add(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); }, `child ${child.pid}`);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const exited = new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`child timed out: ${stdout}${stderr}`)); }, 20_000);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('exit', (code) => { clearTimeout(timer); resolve(code); });
  });
  if (child.pid === undefined) throw new Error('child did not start');
  cg.addProcess(child.pid); // before the child makes any socket: a socket belongs to its creator's cgroup
  child.stdin?.end('go\n');
  const code = await exited;
  assert.equal(code, 0, `child failed: ${stderr}`);
  const line = stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as ChildReport;
}

describe('cgroup sock_addr links', () => {
  test('connect/getpeername/sendmsg/recvmsg translate a VIP for the cgroup, and stop once detached', async (t) => {
    if (skipUnlessRoot(t)) return;
    findCgroup2Mount(); // throws with a clear message without cgroup v2
    const backends = await startBackends();

    const coll = Collection.load(bpfObjectPath('sock_test'), {
      constants: {
        vip4: ipv4Bytes(VIP4),
        backend4: ipv4Bytes(BACKEND4),
        vip6: IPV6_LOOPBACK,
        backend6: IPV6_LOOPBACK,
        vip_port: be16(VIP_PORT),
        backend_port: be16(backends.port),
      },
    });
    cleanup.add(() => coll.close(), 'sock_test collection');
    const calls = coll.map('hook_calls', u32, u64);
    cleanup.add(() => calls.close(), 'hook_calls map');
    const counts = (): bigint[] => Array.from({ length: 2 * HOOK_MAX }, (_, i) => calls.lookup(i) ?? 0n);

    const cg = createCgroup('waggle-link-test');
    cleanup.add(() => cg.remove(), `cgroup ${cg.path}`);

    const links: Link[] = [];
    for (const hook of HOOKS_USED) {
      const link = attachCgroup(coll.program(`sock_${hook}`), cg.path, sockAddrAttachType(hook));
      cleanup.add(() => { if (!link.isClosed) link.detach(); }, `${hook} link`);
      links.push(link);
      assert.equal(link.type, LinkType.Cgroup);
      const info = link.info();
      assert.equal(info.cgroupId, cg.id);
      assert.equal(info.attachType, sockAddrAttachType(hook));
    }

    const before = counts();
    const report = await runChild(cg);
    const inCgroup = report.cgroup.split('\n').find((l) => l.startsWith('0::'));
    assert.ok(inCgroup?.endsWith(cg.path.slice(findCgroup2Mount().length)), `child cgroup: ${report.cgroup}`);

    // TCP over IPv4: the child asked for the VIP, reached the backend, and getpeername says VIP.
    assert.equal(report.tcp4.error, undefined, `tcp4: ${JSON.stringify(report.tcp4)}`);
    assert.equal(report.tcp4.peer, `${VIP4} ${VIP_PORT}`);
    assert.equal(report.tcp4.echo, 'hello');
    assert.ok(backends.tcp4Peers.includes(report.tcp4.localPort ?? -1), 'the IPv4 backend served the child');
    // TCP over IPv6: [::1]:18080 -> [::1]:PORT, reported back as [::1]:18080.
    assert.equal(report.tcp6.error, undefined, `tcp6: ${JSON.stringify(report.tcp6)}`);
    assert.equal(report.tcp6.peer, `${VIP6} ${VIP_PORT}`);
    assert.equal(report.tcp6.echo, 'hello');
    assert.ok(backends.tcp6Peers.includes(report.tcp6.localPort ?? -1), 'the IPv6 backend served the child');
    // UDP: sendmsg to the VIP reaches the backend; the reply seems to come from the VIP.
    assert.deepEqual(report.udp4, { from: `${VIP4} ${VIP_PORT}`, echo: 'ping' });
    assert.equal(backends.udp4Peers.length, 1);

    const now = counts();
    for (const hook of HOOKS_USED) {
      const i = HOOK[hook];
      assert.ok((now[i] ?? 0n) > (before[i] ?? 0n), `${hook} ran`);
      assert.ok((now[i + HOOK_MAX] ?? 0n) > (before[i + HOOK_MAX] ?? 0n), `${hook} translated`);
    }
    assert.equal(sockAddrAttachType('connect4'), AttachType.CgroupInet4Connect);

    // Detached: the VIP is just an address again.
    for (const link of links) link.detach();
    const served = [backends.tcp4Peers.length, backends.tcp6Peers.length, backends.udp4Peers.length];
    const detachedAt = counts();
    const plain = await runChild(cg);
    // Nothing listens there (ECONNREFUSED), or if something on this host does, it is not our backend.
    assert.ok(plain.tcp4.error === 'ECONNREFUSED' || plain.tcp4.peer === `${VIP4} ${VIP_PORT}`, `tcp4: ${JSON.stringify(plain.tcp4)}`);
    assert.ok(plain.tcp6.error === 'ECONNREFUSED' || plain.tcp6.peer === `${VIP6} ${VIP_PORT}`, `tcp6: ${JSON.stringify(plain.tcp6)}`);
    assert.notEqual(plain.udp4.echo, 'ping', `udp4: ${JSON.stringify(plain.udp4)}`);
    assert.deepEqual([backends.tcp4Peers.length, backends.tcp6Peers.length, backends.udp4Peers.length], served);
    assert.deepEqual(counts(), detachedAt, 'no hook ran after detach');
  });
});
