/**
 * Socket-level load balancing (bpf/sock.bpf.c + sock.ts) with real sockets.
 *
 * A private bpffs, a test cgroup with the eight programs attached through
 * pinned links, and a network namespace with nothing but `lo`: backends
 * listen (TCP and UDP echo of their own address) on 127.0.0.11-13:8080 and
 * [fd00:96:1::11-13]:8080; services are 10.96.0.x:80 and [fd00:96::x]:80,
 * addresses that exist nowhere (unroutable in the namespace: an untranslated
 * connect fails with ENETUNREACH, so nothing ever leaves). A client process in
 * that namespace, moved into the cgroup, connects and sends on command; a
 * second client outside the cgroup shows what happens without the hooks.
 */
import assert from 'node:assert/strict';
import { type ChildProcess } from 'node:child_process';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Btf } from '../bpf/btf.js';
import { be16, bytes, parseIPv4, parseIPv6, struct, u16, u32, u64, u8, type StructCodec } from '../bpf/codec.js';
import { check } from '../bpf/fd.js';
import { BpfMap } from '../bpf/map.js';
import { Collection, readObjectSpec } from '../bpf/object.js';
import { bpf } from '../bpf/sys.js';
import { Cmd, MapType } from '../bpf/types.js';
import { Link } from '../bpf/link/link.js';
import { bpfObjectPath } from './objects.js';
import {
  LB_AFFINITY_NETNS, SOCK_LB_HOOKS, attachSocketLb, detachSocketLb, lbAddressText, lbSockRevnat, lbSockRevnatKey, lbSockUdp,
  lbSockUdpKey, sockLbLinkDir, sockRevNatMap, socketLbAttached, socketLbLinks, socketLbStats,
} from './sock.js';
import { Cleanup, createNetns, type Netns } from '../../test/helpers/netns.js';
import { createCgroup } from '../../test/helpers/cgroup.js';
import { mountTempBpffs } from '../../test/helpers/bpffs.js';
import { skipUnlessRoot } from '../../test/helpers/root.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const TCP = 6;
const UDP = 17;
const AF_INET = 2;
const AF_INET6 = 10;
const LB_F_MAGLEV = 0x01;
const LB_F_AFFINITY = 0x02;
const LB_BACKEND_F_TERMINATING = 0x01;
const BACKEND_PORT = 8080;
const SVC_PORT = 80;
const BE4 = ['127.0.0.11', '127.0.0.12', '127.0.0.13'];
const BE6 = ['fd00:96:1::11', 'fd00:96:1::12', 'fd00:96:1::13'];

// --- a tiny local encoder of bpf/include/lb.h (checked against BTF below) ---

interface SvcKey { addr: Uint8Array; port: number; proto: number; family: number; slot: number }
interface Svc { backendId: number; serviceId: number; count: number; flags: number; affinityTimeout: number; maglevSize: number }
interface Backend { addr: Uint8Array; port: number; proto: number; family: number; flags: number }
interface AffinityKey { client: Uint8Array; serviceId: number; family: number }
interface Affinity { lastUsedNs: bigint; backendId: number }

const svcKeyCodec = struct<SvcKey>('lb_service_key', 24, {
  addr: { offset: 0, codec: bytes(16) },
  port: { offset: 16, codec: be16 },
  proto: { offset: 18, codec: u8 },
  family: { offset: 19, codec: u8 },
  slot: { offset: 20, codec: u16 },
});
const svcCodec = struct<Svc>('lb_service', 20, {
  backendId: { offset: 0, codec: u32 },
  serviceId: { offset: 4, codec: u32 },
  count: { offset: 8, codec: u16 },
  flags: { offset: 10, codec: u8 },
  affinityTimeout: { offset: 12, codec: u32 },
  maglevSize: { offset: 16, codec: u32 },
});
const backendCodec = struct<Backend>('lb_backend', 24, {
  addr: { offset: 0, codec: bytes(16) },
  port: { offset: 16, codec: be16 },
  proto: { offset: 18, codec: u8 },
  family: { offset: 19, codec: u8 },
  flags: { offset: 20, codec: u8 },
});
const affinityKeyCodec = struct<AffinityKey>('lb_affinity_key', 24, {
  client: { offset: 0, codec: bytes(16) },
  serviceId: { offset: 16, codec: u32 },
  family: { offset: 20, codec: u8 },
});
const affinityCodec = struct<Affinity>('lb_affinity', 16, {
  lastUsedNs: { offset: 0, codec: u64 },
  backendId: { offset: 8, codec: u32 },
});

/**
 * Flags a Maglev table needs: the kernel accepts an inner map only with the
 * template's exact flags, and libbpf (1.1.2 here) makes the template with
 * BPF_F_INNER_MAP | BPF_F_MMAPABLE (0x1400), not just what the C says.
 */
function maglevInnerFlags(): number {
  const inner = readObjectSpec(bpfObjectPath('sock')).maps.find((m) => m.name === 'lb_maglev')?.innerMap;
  assert.ok(inner, 'lb_maglev has an inner map template');
  return inner.flags;
}

function addrBytes(ip: string): Uint8Array {
  const out = new Uint8Array(16);
  out.set(isIPv4(ip) ? parseIPv4(ip) : parseIPv6(ip));
  return out;
}
const familyOf = (ip: string): number => (isIPv4(ip) ? AF_INET : AF_INET6);

/** The lb maps pinned under pinDir, written the way the agent's writer will. */
class LbMaps {
  readonly services: BpfMap<SvcKey, Svc>;
  readonly backends: BpfMap<number, Backend>;
  readonly maglev: BpfMap<number, number>;
  readonly affinity: BpfMap<AffinityKey, Affinity>;
  private readonly tables = new Map<number, BpfMap<number, number>>();
  private readonly slots = new Map<string, number>();

  constructor(pinDir: string) {
    this.services = BpfMap.openPinned(join(pinDir, 'lb_services'), svcKeyCodec, svcCodec);
    this.backends = BpfMap.openPinned(join(pinDir, 'lb_backends'), u32, backendCodec);
    this.maglev = BpfMap.openPinned(join(pinDir, 'lb_maglev'), u32, u32);
    this.affinity = BpfMap.openPinned(join(pinDir, 'lb_affinity'), affinityKeyCodec, affinityCodec);
  }

  backend(id: number, ip: string, proto: number, flags = 0): void {
    this.backends.update(id, { addr: addrBytes(ip), port: BACKEND_PORT, proto, family: familyOf(ip), flags });
  }

  service(vip: string, proto: number, serviceId: number, backendIds: number[], opts: { flags?: number; affinityTimeout?: number; maglev?: number[] } = {}): void {
    const key = (slot: number): SvcKey => ({ addr: addrBytes(vip), port: SVC_PORT, proto, family: familyOf(vip), slot });
    let maglevSize = 0;
    if (opts.maglev) {
      maglevSize = opts.maglev.length;
      let table = this.tables.get(serviceId);
      if (!table) {
        table = BpfMap.create({ name: `maglev_${serviceId}`, type: MapType.Array, keySize: 4, valueSize: 4, maxEntries: maglevSize, flags: maglevInnerFlags() }, u32, u32);
        this.tables.set(serviceId, table);
      }
      opts.maglev.forEach((id, i) => table.update(i, id));
      this.maglev.update(serviceId, table.fd);
    }
    backendIds.forEach((backendId, i) => this.services.update(key(i + 1), { backendId, serviceId, count: 0, flags: 0, affinityTimeout: 0, maglevSize: 0 }));
    const name = `${vip}/${proto}`;
    for (let slot = backendIds.length + 1; slot <= (this.slots.get(name) ?? 0); slot++) this.services.delete(key(slot));
    this.slots.set(name, backendIds.length);
    this.services.update(key(0), {
      backendId: 0, serviceId, count: backendIds.length, flags: opts.flags ?? 0, affinityTimeout: opts.affinityTimeout ?? 0, maglevSize,
    });
  }

  close(): void {
    for (const m of [this.services, this.backends, this.maglev, this.affinity, ...this.tables.values()]) m.close();
  }
}

// --- processes in the namespace ---

/** TCP: answers every connection with the address it was reached on. UDP: replies with it. */
const SERVER = `
const net = require('net');
const dgram = require('dgram');
const p = JSON.parse(process.argv[1]);
let pending = 0;
const ready = () => { if (--pending === 0) process.stdout.write('ready\\n'); };
const fail = (e) => { process.stderr.write(String(e.stack || e) + '\\n'); process.exit(1); };
for (const a of p.addrs) {
  pending += 2;
  const srv = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end(JSON.stringify({ backend: a }));
  });
  srv.on('error', fail);
  srv.listen({ host: a, port: p.port, ipv6Only: a.includes(':') }, ready);
  const u = dgram.createSocket(a.includes(':') ? 'udp6' : 'udp4');
  u.on('error', fail);
  u.on('message', (m, r) => u.send(JSON.stringify({ backend: a }), r.port, r.address));
  u.bind(p.port, a, ready);
}
`;

/** Runs one JSON command per stdin line, answers one JSON line each. */
const CLIENT = `
const net = require('net');
const dgram = require('dgram');
const fs = require('fs');
const readline = require('readline');
const T = 2000;
const code = (e) => e.code || e.message;
const socks = new Map();
let nextSock = 1;

function tcpOnce(host, port) {
  return new Promise((resolve) => {
    const r = {};
    let buf = '';
    let done = false;
    const s = net.connect({ host, port });
    const finish = (x) => { if (done) return; done = true; clearTimeout(t); s.destroy(); resolve(x); };
    const t = setTimeout(() => finish({ error: 'timeout' }), T);
    s.on('connect', () => { r.peer = s.remoteAddress + ' ' + s.remotePort; });
    s.on('data', (d) => { buf += d; });
    s.on('end', () => {
      try { finish({ ...r, backend: JSON.parse(buf).backend }); } catch { finish({ error: 'bad reply ' + buf }); }
    });
    s.on('error', (e) => finish({ error: code(e) }));
  });
}

function udpOpen(type) {
  const s = dgram.createSocket(type);
  const queue = [];
  let waiter = null;
  s.on('error', () => undefined);
  s.on('message', (m, r) => {
    let backend;
    try { backend = JSON.parse(m.toString()).backend; } catch { backend = 'bad reply'; }
    const x = { from: r.address + ' ' + r.port, backend };
    if (waiter) { const w = waiter; waiter = null; w(x); } else queue.push(x);
  });
  const next = () => new Promise((resolve) => {
    if (queue.length > 0) { resolve(queue.shift()); return; }
    const t = setTimeout(() => { waiter = null; resolve({ error: 'timeout' }); }, T);
    waiter = (x) => { clearTimeout(t); resolve(x); };
  });
  const id = nextSock++;
  socks.set(id, { s, next, connected: false });
  return id;
}

const sent = (fn) => new Promise((resolve) => fn((e) => resolve(e ? { error: code(e) } : undefined)));

const ops = {
  cgroup: async () => fs.readFileSync('/proc/self/cgroup', 'utf8'),
  tcp: async ({ host, port, count }) => {
    const out = [];
    for (let i = 0; i < (count || 1); i++) out.push(await tcpOnce(host, port));
    return out;
  },
  udpOpen: async ({ type }) => udpOpen(type),
  udpClose: async ({ sock }) => { socks.get(sock).s.close(); socks.delete(sock); return true; },
  udpSendto: async ({ sock, host, port, count }) => {
    const u = socks.get(sock);
    const out = [];
    for (let i = 0; i < (count || 1); i++) {
      const err = await sent((cb) => u.s.send('x', port, host, cb));
      out.push(err || await u.next());
    }
    return out;
  },
  udpConnect: async ({ sock, host, port }) => {
    const u = socks.get(sock);
    if (u.connected) { u.s.disconnect(); u.connected = false; }
    const err = await sent((cb) => u.s.connect(port, host, cb));
    if (err) return err;
    u.connected = true;
    const peer = u.s.remoteAddress();
    return { peer: peer.address + ' ' + peer.port };
  },
  udpSend: async ({ sock, count }) => {
    const u = socks.get(sock);
    const out = [];
    for (let i = 0; i < (count || 1); i++) {
      const err = await sent((cb) => u.s.send('x', cb));
      out.push(err || await u.next());
    }
    return out;
  },
};

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const cmd = JSON.parse(line);
  let out;
  try { out = await ops[cmd.op](cmd); } catch (e) { out = { error: 'client: ' + String(e && e.stack || e) }; }
  process.stdout.write(JSON.stringify({ id: cmd.id, out }) + '\\n');
}).on('close', () => process.exit(0));
`;

function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

function track(child: ChildProcess, label: string): void {
  cleanup.add(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }, label);
}

async function startServer(ns: Netns): Promise<void> {
  const child = ns.spawn([process.execPath, '-e', SERVER, JSON.stringify({ addrs: [...BE4, ...BE6], port: BACKEND_PORT })], { env: childEnv() });
  track(child, 'backend server');
  let out = '';
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`backend server not ready: ${out}${err}`)), 10_000);
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('ready\n')) { clearTimeout(timer); resolve(); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`backend server exited (${code}): ${err}`)); });
  });
}

interface TcpResult { peer?: string; backend?: string; error?: string }
interface UdpResult { from?: string; backend?: string; error?: string }

/** A client process; `call` sends one command and waits for its answer. */
class Client {
  private buf = '';
  private stderr = '';
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(readonly child: ChildProcess, readonly label: string) {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      this.buf += d;
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        const msg = JSON.parse(line) as { id: number; out: unknown };
        this.waiting.get(msg.id)?.resolve(msg.out);
        this.waiting.delete(msg.id);
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { this.stderr += d; });
    child.once('exit', (code) => {
      for (const w of this.waiting.values()) w.reject(new Error(`${label} exited (${code}): ${this.stderr}`));
      this.waiting.clear();
    });
  }

  call<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiting.delete(id); reject(new Error(`${this.label}: ${op} timed out: ${this.stderr}`)); }, 60_000);
      this.waiting.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v as T); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.child.stdin?.write(`${JSON.stringify({ id, op, ...args })}\n`);
    });
  }

  tcp(host: string, count = 1): Promise<TcpResult[]> {
    return this.call('tcp', { host, port: SVC_PORT, count });
  }

  udpOpen(type: 'udp4' | 'udp6'): Promise<number> {
    return this.call('udpOpen', { type });
  }

  udpSendto(sock: number, host: string, count = 1): Promise<UdpResult[]> {
    return this.call('udpSendto', { sock, host, port: SVC_PORT, count });
  }

  udpConnect(sock: number, host: string): Promise<{ peer?: string; error?: string }> {
    return this.call('udpConnect', { sock, host, port: SVC_PORT });
  }

  udpSend(sock: number, count = 1): Promise<UdpResult[]> {
    return this.call('udpSend', { sock, count });
  }

  udpClose(sock: number): Promise<boolean> {
    return this.call('udpClose', { sock });
  }
}

function startClient(ns: Netns, label: string, cgroup?: { addProcess(pid: number): void }): Client {
  const child = ns.spawn([process.execPath, '-e', CLIENT], { env: childEnv() });
  track(child, label);
  if (child.pid === undefined) throw new Error(`${label} did not start`);
  // Before it makes any socket (it makes none until told to): a socket belongs to its creator's cgroup.
  cgroup?.addProcess(child.pid);
  cleanup.add(() => { child.stdin?.end(); }, `${label} stdin`);
  return new Client(child, label);
}

const distinct = (rs: { backend?: string }[]): Set<string | undefined> => new Set(rs.map((r) => r.backend));

function assertServed(rs: (TcpResult | UdpResult)[], backends: string[], what: string): void {
  for (const r of rs) {
    assert.equal(r.error, undefined, `${what}: ${JSON.stringify(r)}`);
    assert.ok(backends.includes(r.backend ?? ''), `${what}: served by ${r.backend}`);
  }
}

/** Checks a codec's size and member offsets against a struct in the BTF of sock.bpf.o. */
function checkAgainstBtf(btf: Btf, codec: StructCodec<object>): void {
  const layout = btf.struct(codec.cName);
  assert.equal(codec.size, layout.size, `size of struct ${codec.cName}`);
  const members = codec.members as Record<string, { offset: number; codec: { size: number } }>;
  const real = layout.members.filter((m) => !/^_?pad\d*$/.test(m.name));
  assert.equal(Object.keys(members).length, real.length, `member count of struct ${codec.cName}`);
  for (const m of real) {
    const mine = members[m.name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())];
    assert.ok(mine, `codec of struct ${codec.cName} lacks member ${m.name}`);
    assert.equal(mine.offset, m.bitOffset / 8, `offset of ${codec.cName}.${m.name}`);
    assert.equal(mine.codec.size, m.size, `size of ${codec.cName}.${m.name}`);
  }
}

test('the codecs of lb_sock.h (and this test\'s lb.h encoder) match the BTF of sock.bpf.o', () => {
  const btf = Btf.fromFile(bpfObjectPath('sock'));
  try {
    for (const c of [lbSockRevnatKey, lbSockRevnat, lbSockUdpKey, lbSockUdp, svcKeyCodec, svcCodec, backendCodec, affinityKeyCodec, affinityCodec]) {
      checkAgainstBtf(btf, c as StructCodec<object>);
    }
  } finally {
    btf.close();
  }
});

/** `BPF_LINK_UPDATE` (to put a foreign program on a pinned link). */
function swapLinkProgram(link: Link, progFd: number): void {
  const attr = Buffer.alloc(16);
  attr.writeUInt32LE(link.fd, 0);
  attr.writeUInt32LE(progFd, 4);
  check(bpf(Cmd.LinkUpdate, attr), () => 'link update');
}

describe('socket load balancing at the cgroup hooks', () => {
  test('services are balanced at connect/sendmsg and look like themselves to the client', async (t) => {
    if (skipUnlessRoot(t)) return;

    const bpffs = mountTempBpffs();
    cleanup.add(() => bpffs.unmount(), 'bpffs');
    const pinDir = join(bpffs.path, 'agent');
    const cg = createCgroup('waggle-socklb');
    cleanup.add(() => cg.remove(), `cgroup ${cg.path}`);
    const ns = createNetns('wsocklb');
    cleanup.add(() => ns.remove(), `netns ${ns.name}`);
    for (const a of BE6) ns.exec(['ip', 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad']);

    const handle = attachSocketLb({ pinDir, cgroupPath: cg.path });
    cleanup.add(() => { detachSocketLb(pinDir); }, 'socket lb links');
    assert.equal(handle.cgroupId, cg.id);
    assert.deepEqual(handle.links.map((l) => l.hook), [...SOCK_LB_HOOKS]);
    assert.ok(handle.links.every((l) => l.action === 'created'));
    assert.ok(socketLbAttached(pinDir, cg.path));
    for (const s of socketLbLinks(pinDir)) assert.equal(s.cgroupId, cg.id, `${s.hook} attached to the test cgroup`);

    const maps = new LbMaps(pinDir);
    cleanup.add(() => maps.close(), 'lb map handles');
    // Backends: 1-3 IPv4 TCP, 4-6 IPv4 UDP, 7-9 IPv6 TCP, 10-12 IPv6 UDP.
    BE4.forEach((a, i) => { maps.backend(1 + i, a, TCP); maps.backend(4 + i, a, UDP); });
    BE6.forEach((a, i) => { maps.backend(7 + i, a, TCP); maps.backend(10 + i, a, UDP); });
    maps.service('10.96.0.10', TCP, 1, [1, 2, 3]);
    maps.service('10.96.0.10', UDP, 2, [4, 5, 6]);
    maps.service('fd00:96::10', TCP, 3, [7, 8, 9]);
    maps.service('fd00:96::10', UDP, 4, [10, 11, 12]);
    maps.service('10.96.0.11', TCP, 5, [1, 2, 3], { flags: LB_F_AFFINITY, affinityTimeout: 600 });
    const maglev = (ids: number[]): number[] => Array.from({ length: 251 }, (_, i) => ids[(i * 7) % ids.length] as number);
    maps.service('10.96.0.12', TCP, 6, [1, 2, 3], { flags: LB_F_MAGLEV, maglev: maglev([1, 2, 3]) });
    maps.service('10.96.0.12', UDP, 7, [4, 5, 6], { flags: LB_F_MAGLEV, maglev: maglev([4, 5, 6]) });
    maps.service('10.96.0.13', TCP, 8, []);
    maps.service('10.96.0.13', UDP, 9, []);
    maps.service('fd00:96::13', TCP, 10, []);

    await startServer(ns);
    const client = startClient(ns, 'client in the cgroup', cg);
    const outsider = startClient(ns, 'client outside the cgroup');
    const where = await client.call<string>('cgroup');
    assert.ok(where.split('\n').some((l) => l.startsWith('0::') && cg.path.endsWith(l.slice(3))), `client cgroup: ${where}`);

    await t.test('TCP over IPv4 and IPv6 reaches every backend; getpeername shows the service', async () => {
      const r4 = await client.tcp('10.96.0.10', 30);
      assertServed(r4, BE4, 'tcp4');
      for (const r of r4) assert.equal(r.peer, '10.96.0.10 80');
      assert.equal(distinct(r4).size, 3, 'random selection spreads over all three backends');
      const r6 = await client.tcp('fd00:96::10', 30);
      assertServed(r6, BE6, 'tcp6');
      for (const r of r6) assert.equal(r.peer, 'fd00:96::10 80');
      assert.equal(distinct(r6).size, 3);
    });

    await t.test('connected UDP: every new socket picks a backend; peer and reply source are the service', async () => {
      for (const [type, vip, backends] of [['udp4', '10.96.0.10', BE4], ['udp6', 'fd00:96::10', BE6]] as const) {
        const seen: UdpResult[] = [];
        for (let i = 0; i < 45; i++) {
          const sock = await client.udpOpen(type);
          assert.deepEqual(await client.udpConnect(sock, vip), { peer: `${vip} 80` });
          const [r] = await client.udpSend(sock, 1);
          assert.ok(r);
          assert.equal(r.from, `${vip} 80`, `${type} reply source: ${JSON.stringify(r)}`);
          seen.push(r);
          await client.udpClose(sock);
        }
        assertServed(seen, [...backends], `${type} connected`);
        assert.equal(distinct(seen).size, 3, `${type}: all backends`);
      }
    });

    await t.test('unconnected UDP (sendto): one socket stays on one backend; recvfrom shows the service', async () => {
      for (const [type, vip, backends] of [['udp4', '10.96.0.10', BE4], ['udp6', 'fd00:96::10', BE6]] as const) {
        const perSocket = new Set<string | undefined>();
        // 45 sockets over 3 random backends: all of them are used but for a chance of 3 × (2/3)^45 ≈ 4e-8.
        for (let i = 0; i < 45; i++) {
          const sock = await client.udpOpen(type);
          const rs = await client.udpSendto(sock, vip, 4);
          assertServed(rs, [...backends], `${type} sendto`);
          for (const r of rs) assert.equal(r.from, `${vip} 80`);
          assert.equal(distinct(rs).size, 1, `${type}: one socket, one backend: ${JSON.stringify(rs)}`);
          perSocket.add(rs[0]?.backend);
          await client.udpClose(sock);
        }
        assert.equal(perSocket.size, 3, `${type}: sockets spread over all backends`);
      }
    });

    await t.test('IPv4-mapped IPv6: an IPv6 socket to ::ffff:VIP reaches the IPv4 backends', async () => {
      const r = await client.tcp('::ffff:10.96.0.10', 9);
      assertServed(r, BE4, 'tcp to ::ffff:10.96.0.10');
      for (const x of r) assert.equal(x.peer, '::ffff:10.96.0.10 80');
      const sock = await client.udpOpen('udp6');
      const u = await client.udpSendto(sock, '::ffff:10.96.0.10', 3);
      assertServed(u, BE4, 'udp6 sendto ::ffff:10.96.0.10');
      for (const x of u) assert.equal(x.from, '::ffff:10.96.0.10 80');
      assert.equal(distinct(u).size, 1);
      assert.deepEqual(await client.udpConnect(sock, '::ffff:10.96.0.10'), { peer: '::ffff:10.96.0.10 80' });
      const c = await client.udpSend(sock, 2);
      assertServed(c, BE4, 'udp6 connected to ::ffff:10.96.0.10');
      for (const x of c) assert.equal(x.from, '::ffff:10.96.0.10 80');
      await client.udpClose(sock);
    });

    await t.test('the reverse entries name the socket, the backend and the service', () => {
      const revnat = sockRevNatMap(pinDir);
      try {
        const entries = [...revnat.entries()];
        assert.ok(entries.length > 0);
        const tcp4 = entries.filter(([k, v]) => k.family === AF_INET && v.serviceId === 1);
        assert.ok(tcp4.length >= 3);
        for (const [k, v] of tcp4) {
          assert.ok(BE4.includes(lbAddressText(k.family, k.addr)));
          assert.equal(k.port, BACKEND_PORT);
          assert.notEqual(k.cookie, 0n);
          assert.equal(`${lbAddressText(v.family, v.addr)} ${v.port}`, '10.96.0.10 80');
        }
        assert.ok(entries.some(([, v]) => v.family === AF_INET6 && lbAddressText(v.family, v.addr) === 'fd00:96::10'));
      } finally {
        revnat.close();
      }
    });

    await t.test('a process outside the cgroup is not translated', async () => {
      const [r4] = await outsider.tcp('10.96.0.10');
      assert.equal(r4?.error, 'ENETUNREACH', JSON.stringify(r4));
      const [r6] = await outsider.tcp('fd00:96::10');
      assert.equal(r6?.error, 'ENETUNREACH', JSON.stringify(r6));
      const sock = await outsider.udpOpen('udp4');
      const [u] = await outsider.udpSendto(sock, '10.96.0.10');
      assert.equal(u?.error, 'ENETUNREACH', JSON.stringify(u));
      await outsider.udpClose(sock);
      // The backends themselves are reachable from there: only the hooks make the VIP work.
      const direct = await outsider.call<TcpResult[]>('tcp', { host: BE4[0], port: BACKEND_PORT });
      assert.equal(direct[0]?.backend, BE4[0]);
    });

    await t.test('sessionAffinity keeps one client on one backend', async () => {
      const rs = await client.tcp('10.96.0.11', 20);
      assertServed(rs, BE4, 'affinity');
      for (const r of rs) assert.equal(r.peer, '10.96.0.11 80');
      assert.equal(distinct(rs).size, 1, `one backend: ${JSON.stringify([...distinct(rs)])}`);
      const entries = [...maps.affinity.entries()].filter(([k]) => k.serviceId === 5);
      assert.equal(entries.length, 1, 'one affinity entry: the client\'s network namespace');
      const [key, value] = entries[0] as [AffinityKey, Affinity];
      assert.equal(key.family, LB_AFFINITY_NETNS);
      assert.notEqual(Buffer.from(key.client).readBigUInt64LE(0), 0n, 'keyed by the netns cookie');
      assert.equal(BE4[value.backendId - 1], rs[0]?.backend);
    });

    await t.test('Maglev: the same socket hashes to the same backend, sockets spread, the table decides', async () => {
      const sock = await client.udpOpen('udp4');
      const same: UdpResult[] = [];
      for (let i = 0; i < 10; i++) {
        assert.deepEqual(await client.udpConnect(sock, '10.96.0.12'), { peer: '10.96.0.12 80' });
        same.push(...await client.udpSend(sock, 1));
      }
      assertServed(same, BE4, 'maglev udp reconnects');
      assert.equal(distinct(same).size, 1, `a reconnecting socket stays: ${JSON.stringify(same)}`);
      // The same reconnects on a random service move around.
      const random: UdpResult[] = [];
      for (let i = 0; i < 20; i++) {
        await client.udpConnect(sock, '10.96.0.10');
        random.push(...await client.udpSend(sock, 1));
      }
      assertServed(random, BE4, 'random udp reconnects');
      assert.ok(distinct(random).size > 1, 'random selection does not stick to a socket');
      await client.udpClose(sock);

      const spread = await client.tcp('10.96.0.12', 30);
      assertServed(spread, BE4, 'maglev tcp');
      assert.ok(distinct(spread).size >= 2, 'distinct sockets hash over the table');
      // Every entry of the table on backend 2: every new connection goes there.
      maps.service('10.96.0.12', TCP, 6, [1, 2, 3], { flags: LB_F_MAGLEV, maglev: maglev([2]) });
      const pinned = await client.tcp('10.96.0.12', 10);
      assertServed(pinned, BE4, 'maglev tcp, one-backend table');
      assert.deepEqual([...distinct(pinned)], [BE4[1]]);
    });

    await t.test('terminating backends get no new sockets, and a UDP socket moves off its terminating backend', async () => {
      const sock = await client.udpOpen('udp4');
      const before = await client.udpSendto(sock, '10.96.0.10', 3);
      assertServed(before, BE4, 'before');
      assert.equal(distinct(before).size, 1);
      const old = BE4.indexOf(before[0]?.backend ?? '');
      // The control plane's part: the backend keeps its lb_backends entry, flagged, and loses its slot.
      maps.backend(4 + old, BE4[old] as string, UDP, LB_BACKEND_F_TERMINATING);
      maps.service('10.96.0.10', UDP, 2, [4, 5, 6].filter((id) => id !== 4 + old));
      const afterwards = await client.udpSendto(sock, '10.96.0.10', 3);
      assertServed(afterwards, BE4, 'after');
      assert.equal(distinct(afterwards).size, 1, 'sticky again, on one of the others');
      assert.notEqual(afterwards[0]?.backend, BE4[old]);
      for (const r of afterwards) assert.equal(r.from, '10.96.0.10 80');
      await client.udpClose(sock);
      const fresh = await client.tcp('10.96.0.10', 12);
      assertServed(fresh, BE4, 'tcp');
      maps.service('10.96.0.10', TCP, 1, [1, 2, 3].filter((id) => id !== 1 + old));
      const without = await client.tcp('10.96.0.10', 15);
      assertServed(without, BE4.filter((_, i) => i !== old), 'tcp without the removed backend');
      maps.backend(4 + old, BE4[old] as string, UDP);
      maps.service('10.96.0.10', UDP, 2, [4, 5, 6]);
      maps.service('10.96.0.10', TCP, 1, [1, 2, 3]);
    });

    await t.test('a service without backends refuses: ECONNREFUSED on connect and sendto', async () => {
      const noneBefore = socketLbStats(pinDir).noBackend;
      const [t4] = await client.tcp('10.96.0.13');
      assert.equal(t4?.error, 'ECONNREFUSED');
      const [t6] = await client.tcp('fd00:96::13');
      assert.equal(t6?.error, 'ECONNREFUSED');
      const sock = await client.udpOpen('udp4');
      const [u] = await client.udpSendto(sock, '10.96.0.13');
      assert.equal(u?.error, 'ECONNREFUSED');
      assert.deepEqual(await client.udpConnect(sock, '10.96.0.13'), { error: 'ECONNREFUSED' });
      await client.udpClose(sock);
      assert.equal(socketLbStats(pinDir).noBackend - noneBefore, 4);
    });

    await t.test('counters', () => {
      const stats = socketLbStats(pinDir);
      assert.ok(stats.connectTranslated > 100, JSON.stringify(stats));
      assert.ok(stats.sendmsgTranslated > 100, JSON.stringify(stats));
      assert.ok(stats.udpSticky > 50, JSON.stringify(stats));
      assert.ok(stats.revNat > 200, JSON.stringify(stats));
      assert.equal(stats.revNatUpdateFailed, 0);
    });

    await t.test('attaching again (an agent restart) adopts the pinned links; stale ones are replaced', async () => {
      const again = attachSocketLb({ pinDir, cgroupPath: cg.path });
      assert.ok(again.links.every((l) => l.action === 'adopted'), JSON.stringify(again.links.map((l) => l.action)));
      assert.deepEqual(again.links.map((l) => l.linkId), handle.links.map((l) => l.linkId));
      assert.deepEqual(again.links.map((l) => l.programId), handle.links.map((l) => l.programId));

      // connect4's link runs another program (a copy with private maps), getpeername4's link is defunct.
      const foreign = Collection.load(bpfObjectPath('sock'), { programs: ['lb_connect4'] });
      cleanup.add(() => foreign.close(), 'foreign collection');
      const dir = sockLbLinkDir(pinDir);
      const c4 = Link.openPinned(join(dir, 'connect4'));
      swapLinkProgram(c4, foreign.program('lb_connect4').fd);
      c4.close();
      foreign.close();
      const gp4 = Link.openPinned(join(dir, 'getpeername4'));
      gp4.detach();
      assert.equal(socketLbAttached(pinDir, cg.path), false);
      const [plain] = await client.tcp('10.96.0.10');
      assert.equal(plain?.error, 'ENETUNREACH', 'connect4 runs a program with empty maps now');

      const fixed = attachSocketLb({ pinDir, cgroupPath: cg.path });
      const actions = Object.fromEntries(fixed.links.map((l) => [l.hook, l.action]));
      assert.deepEqual(actions, {
        connect4: 'updated', connect6: 'adopted', sendmsg4: 'adopted', sendmsg6: 'adopted',
        recvmsg4: 'adopted', recvmsg6: 'adopted', getpeername4: 'created', getpeername6: 'adopted',
      });
      const c4link = fixed.links.find((l) => l.hook === 'connect4');
      assert.equal(c4link?.linkId, handle.links[0]?.linkId, 'the same link, with its program swapped');
      assert.ok(socketLbAttached(pinDir, cg.path));
      const rs = await client.tcp('10.96.0.10', 6);
      assertServed(rs, BE4, 'after re-attach');
      for (const r of rs) assert.equal(r.peer, '10.96.0.10 80');
    });

    await t.test('detaching restores plain behaviour', async () => {
      assert.equal(detachSocketLb(pinDir), SOCK_LB_HOOKS.length);
      assert.equal(socketLbAttached(pinDir), false);
      assert.ok(socketLbLinks(pinDir).every((l) => !l.pinned));
      const [r4] = await client.tcp('10.96.0.10');
      assert.equal(r4?.error, 'ENETUNREACH');
      const [r6] = await client.tcp('fd00:96::10');
      assert.equal(r6?.error, 'ENETUNREACH');
      const [n] = await client.tcp('10.96.0.13');
      assert.equal(n?.error, 'ENETUNREACH', 'no more refusing either');
      const sock = await client.udpOpen('udp4');
      const [u] = await client.udpSendto(sock, '10.96.0.10');
      assert.equal(u?.error, 'ENETUNREACH');
      await client.udpClose(sock);
      assert.equal(detachSocketLb(pinDir), 0, 'safe to repeat');
    });
  });
});
