/**
 * Root tests of the rtnetlink client against the real kernel, inside network
 * namespaces the tests create with createNamedNetns. `ip` is used only to check
 * the results; traffic stays between those namespaces (10.199.x.x, fd99::/16).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Cleanup, ip, listNetns, type Netns } from '../../test/helpers/netns.js';
import { requireTools, skipUnlessRoot } from '../../test/helpers/root.js';
import { ping } from '../../test/helpers/traffic.js';
import {
  NetlinkError, NetlinkSocket, addAddress, addNeighbor, addRoute, closeNetns, createNamedNetns, createVeth, deleteAddress,
  deleteLink, deleteNamedNetns, deleteNeighbor, deleteRoute, getLink, getSysctl, listAddresses, listLinks, listNeighbors,
  listRoutes, moveLinkToNetns, openNetns, replaceRoute, setLinkMac, setLinkUp, setSysctl, type NetlinkTarget,
} from './index.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const MAC_A = '02:99:77:00:00:01';
const MAC_B = '02:99:77:00:00:02';
const MAC_C = '02:99:77:00:00:03';

/** A namespace made by createNamedNetns, removed by the cleanup stack. */
function namedNetns(suffix: string): Netns {
  const name = `wnl-${suffix}-${process.pid}`;
  const path = createNamedNetns(name);
  cleanup.add(() => { deleteNamedNetns(name); }, `netns ${name}`);
  return {
    name,
    path,
    exec: (cmd, opts) => ip(['netns', 'exec', name, ...cmd], opts),
    spawn: (cmd, opts) => spawn('ip', ['netns', 'exec', name, ...cmd], { stdio: ['pipe', 'pipe', 'pipe'], env: opts?.env ?? process.env }),
    remove: () => { deleteNamedNetns(name); },
  };
}

function socketIn(ns: Netns): NetlinkTarget {
  const socket = new NetlinkSocket({ netnsPath: ns.path });
  cleanup.add(() => socket.close(), `netlink socket in ${ns.name}`);
  return { socket };
}

/** `ip -j -n NS ...args`, parsed. */
function ipJson<T = Record<string, unknown>>(ns: Netns, ...args: string[]): T[] {
  return JSON.parse(ip(['-j', '-n', ns.name, ...args])) as T[];
}

interface IpAddrJson { ifname: string; addr_info: { family: string; local: string; prefixlen: number; nodad?: boolean }[] }
interface IpRouteJson { dst: string; gateway?: string; dev?: string; flags: string[]; metric?: number; protocol?: string }
interface IpNeighJson { dst: string; dev?: string; lladdr?: string; state: string[] }
interface IpLinkJson { ifindex: number; ifname: string; address: string; mtu: number; flags: string[]; linkinfo?: { info_kind: string } }

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

test('a netlink socket answers dumps and lookups in its own namespace, and refuses use after close', () => {
  const socket = new NetlinkSocket();
  try {
    assert.ok(socket.fd >= 0 && socket.portId !== 0);
    const lo = getLink('lo', { socket });
    assert.equal(lo?.ifindex, 1);
    assert.equal(getLink(1, { socket })?.name, 'lo');
    assert.ok(listLinks({ socket }).some((l) => l.name === 'lo'));
    assert.ok(listAddresses(1, {}, { socket }).some((x) => x.address === '127.0.0.1'));
  } finally {
    socket.close();
  }
  socket.close();
  assert.equal(socket.open, false);
  assert.throws(() => getLink('lo', { socket }), /socket is closed/);
  assert.throws(() => new NetlinkSocket({ netnsFd: 0, netnsPath: '/x' }), /not both/);
});

test('named namespaces, veth, addresses, routes, neighbours and sysctls, checked with ip and real traffic', async (t) => {
  if (skipUnlessRoot(t) || requireTools(t, 'ip', 'ping')) return;

  // ---- namespaces
  const a = namedNetns('a');
  const b = namedNetns('b');
  const listed = listNetns();
  assert.ok(listed.includes(a.name) && listed.includes(b.name), `ip netns list: ${listed.join(', ')}`);
  const lo = ipJson<IpLinkJson>(a, 'link', 'show', 'dev', 'lo')[0];
  assert.ok(lo?.flags.includes('UP'), 'lo is up in the new namespace');
  assert.match(a.exec(['ip', 'link', 'show', 'lo']), /LOOPBACK,UP/, 'ip netns exec works in it');
  assert.ok(existsSync(b.path));
  assert.throws(() => createNamedNetns(a.name), /EEXIST/);
  assert.ok(listNetns().includes(a.name), 'a failed second create leaves the first alone');

  const A = socketIn(a);
  const B = socketIn(b);
  const fdB = openNetns(b.path);
  cleanup.add(() => closeNetns(fdB), 'netns fd of b');

  // ---- a veth pair made in A, one end moved to B under its final name
  const pair = createVeth({ name: 'wnl0', peerName: 'wnltmp', mtu: 1400, mac: MAC_A }, A);
  assert.equal(getLink('wnltmp', A)?.ifindex, pair.peerIfindex);
  moveLinkToNetns(pair.peerIfindex, fdB, 'wnl1', A);
  assert.equal(getLink('wnltmp', A), undefined, 'the peer left A');
  const b1 = getLink('wnl1', B);
  assert.ok(b1 !== undefined, 'the peer arrived in B as wnl1');
  assert.equal(b1.mtu, 1400);
  assert.equal(b1.kind, 'veth');
  setLinkMac(b1.ifindex, MAC_B, B);
  setLinkUp(pair.ifindex, true, A);
  setLinkUp(b1.ifindex, true, B);

  const a0 = getLink(pair.ifindex, A);
  assert.deepEqual(
    { name: a0?.name, mac: a0?.mac, mtu: a0?.mtu, up: a0?.up, kind: a0?.kind },
    { name: 'wnl0', mac: MAC_A, mtu: 1400, up: true, kind: 'veth' });
  const aJson = ipJson<IpLinkJson>(a, '-d', 'link', 'show', 'dev', 'wnl0')[0];
  assert.equal(aJson?.ifindex, pair.ifindex);
  assert.equal(aJson?.address, MAC_A);
  assert.equal(aJson?.mtu, 1400);
  assert.ok(aJson?.flags.includes('UP'));
  assert.equal(aJson?.linkinfo?.info_kind, 'veth');
  const bJson = ipJson<IpLinkJson>(b, 'link', 'show', 'dev', 'wnl1')[0];
  assert.equal(bJson?.address, MAC_B);
  assert.ok(bJson?.flags.includes('UP'));
  assert.deepEqual(listLinks(A).map((l) => l.name), ['lo', 'wnl0']);

  // ---- addresses
  addAddress(pair.ifindex, '10.199.77.1/24', {}, A);
  addAddress(pair.ifindex, 'fd99:77::1/64', { nodad: true }, A);
  addAddress(b1.ifindex, '10.199.77.2/24', {}, B);
  addAddress(b1.ifindex, 'fd99:77::2/64', { nodad: true }, B);
  // The far ends of B's default routes: host addresses on A's lo.
  addAddress(1, '10.199.79.1/32', {}, A);
  addAddress(1, 'fd99:79::1/128', { nodad: true }, A);

  const mine = listAddresses(pair.ifindex, {}, A).map((x) => x.cidr);
  assert.ok(mine.includes('10.199.77.1/24') && mine.includes('fd99:77::1/64'), mine.join(', '));
  assert.deepEqual(listAddresses(b1.ifindex, { family: 4 }, B).map((x) => x.cidr), ['10.199.77.2/24']);
  const bAddrs = ipJson<IpAddrJson>(b, 'addr', 'show', 'dev', 'wnl1')[0]?.addr_info ?? [];
  assert.ok(bAddrs.some((x) => x.family === 'inet' && x.local === '10.199.77.2' && x.prefixlen === 24));
  assert.ok(bAddrs.some((x) => x.family === 'inet6' && x.local === 'fd99:77::2' && x.prefixlen === 64 && x.nodad === true));

  const dup = captureError(() => addAddress(pair.ifindex, '10.199.77.1/24', {}, A));
  assert.ok(dup instanceof NetlinkError);
  assert.equal(dup.errnoName, 'EEXIST');
  assert.equal(dup.code, 'NETLINK_ERR');
  assert.match(dup.message, /^add address 10\.199\.77\.1\/24 to wnl0 \(ifindex \d+\): EEXIST/);
  assert.equal(deleteAddress(pair.ifindex, '10.199.77.99/24', A), false);

  // ---- static neighbours and onlink default routes in B, through gateways that exist nowhere
  addNeighbor(b1.ifindex, '10.199.78.1', MAC_A, { permanent: true }, B);
  addNeighbor(b1.ifindex, 'fd99:78::1', MAC_A, { permanent: true }, B);
  addRoute({ dst: 'default', gateway: '10.199.78.1', ifindex: b1.ifindex, onlink: true }, B);
  addRoute({ dst: 'default', gateway: 'fd99:78::1', ifindex: b1.ifindex, onlink: true, family: 6 }, B);

  const neigh = ipJson<IpNeighJson>(b, 'neigh', 'show', 'dev', 'wnl1');
  for (const dst of ['10.199.78.1', 'fd99:78::1']) {
    const n = neigh.find((x) => x.dst === dst);
    assert.equal(n?.lladdr, MAC_A, dst);
    assert.deepEqual(n?.state, ['PERMANENT'], dst);
  }
  assert.deepEqual(
    listNeighbors(b1.ifindex, {}, B).filter((n) => n.states.includes('PERMANENT')).map((n) => [n.ip, n.mac]).sort(),
    [['10.199.78.1', MAC_A], ['fd99:78::1', MAC_A]]);

  for (const [family, gw] of [['-4', '10.199.78.1'], ['-6', 'fd99:78::1']] as const) {
    const r = ipJson<IpRouteJson>(b, family, 'route', 'show', 'default')[0];
    assert.equal(r?.gateway, gw);
    assert.equal(r?.dev, 'wnl1');
    assert.ok(r?.flags.includes('onlink'), JSON.stringify(r));
  }
  const def4 = listRoutes(4, {}, B).find((r) => r.dst === 'default');
  assert.deepEqual(
    { gateway: def4?.gateway, ifindex: def4?.ifindex, onlink: def4?.onlink, scope: def4?.scope },
    { gateway: '10.199.78.1', ifindex: b1.ifindex, onlink: true, scope: 'universe' });
  assert.ok(listRoutes(6, {}, B).some((r) => r.dst === 'default' && r.gateway === 'fd99:78::1' && r.onlink));

  // ---- real traffic: the direct link, and B's default routes via the static neighbours
  assert.equal(await ping(a, '10.199.77.2', 2), 2);
  assert.equal(await ping(a, 'fd99:77::2', 2), 2);
  assert.equal(await ping(b, '10.199.79.1', 2), 2);
  assert.equal(await ping(b, 'fd99:79::1', 2), 2);
  // Without the static entry nobody answers ARP for the gateway: the entry is what carries the route.
  assert.equal(deleteNeighbor(b1.ifindex, '10.199.78.1', B), true);
  assert.equal(deleteNeighbor(b1.ifindex, '10.199.78.1', B), false);
  assert.equal(await ping(b, '10.199.79.1', 1), 0);

  // ---- more routes: add, EEXIST, replace, delete, unreachable gateway
  const spec = { dst: '10.199.80.0/24', gateway: '10.199.77.1', ifindex: b1.ifindex };
  addRoute(spec, B);
  const again = captureError(() => addRoute(spec, B));
  assert.ok(again instanceof NetlinkError && again.errnoName === 'EEXIST', String(again));
  replaceRoute({ ...spec, gateway: '10.199.77.3' }, B);
  assert.equal(ipJson<IpRouteJson>(b, 'route', 'show', '10.199.80.0/24')[0]?.gateway, '10.199.77.3');
  addRoute({ dst: '10.199.81.0/24', ifindex: b1.ifindex, metric: 50 }, B);
  const direct = ipJson<IpRouteJson & { scope?: string }>(b, 'route', 'show', '10.199.81.0/24')[0];
  assert.equal(direct?.scope, 'link');
  assert.equal(direct?.metric, 50);
  assert.equal(deleteRoute({ dst: '10.199.80.0/24' }, B), true);
  assert.equal(deleteRoute({ dst: '10.199.80.0/24' }, B), false);
  assert.equal(deleteRoute({ dst: '10.199.81.0/24', ifindex: b1.ifindex }, B), true);
  assert.deepEqual(ipJson(b, 'route', 'show', '10.199.80.0/24'), []);
  const unreachable = captureError(() => addRoute({ dst: '10.199.82.0/24', gateway: '10.199.200.1', ifindex: b1.ifindex }, B));
  assert.ok(unreachable instanceof NetlinkError, String(unreachable));
  assert.match(unreachable.message, /^add route 10\.199\.82\.0\/24 via 10\.199\.200\.1 dev ifindex \d+: E[A-Z]+ \(/);

  // ---- sysctls, per namespace
  setSysctl('net/ipv4/conf/wnl0/forwarding', 1, { netnsPath: a.path });
  assert.equal(getSysctl('net/ipv4/conf/wnl0/forwarding', { netnsPath: a.path }), '1');
  assert.equal(a.exec(['cat', '/proc/sys/net/ipv4/conf/wnl0/forwarding']).trim(), '1');
  assert.equal(getSysctl('net/ipv4/conf/wnl1/forwarding', { netnsFd: fdB }), '0');
  const hostForward = readFileSync('/proc/sys/net/ipv6/conf/all/forwarding', 'utf8').trim();
  setSysctl('net/ipv6/conf/all/forwarding', hostForward === '1' ? 0 : 1, { netnsPath: a.path });
  assert.equal(readFileSync('/proc/sys/net/ipv6/conf/all/forwarding', 'utf8').trim(), hostForward, 'the host is untouched');
  assert.equal(b.exec(['cat', '/proc/sys/net/ipv6/conf/all/forwarding']).trim(), '0', 'and so is B');
  assert.throws(() => getSysctl('net/ipv4/conf/no-such-dev/forwarding', { netnsPath: a.path }), /ENOENT/);
  assert.throws(() => setSysctl('../etc/passwd', 1), /bad sysctl key/);

  // ---- a veth created with its peer directly in B
  const pair2 = createVeth({ name: 'wnl2', peerName: 'wnl3', peerNetnsFd: fdB, mtu: 1280, peerMac: MAC_C }, A);
  const l3 = ipJson<IpLinkJson>(b, 'link', 'show', 'dev', 'wnl3')[0];
  assert.equal(l3?.ifindex, pair2.peerIfindex);
  assert.equal(l3?.address, MAC_C);
  assert.equal(l3?.mtu, 1280);
  assert.equal(getLink('wnl2', A)?.linkNetnsId !== undefined, true, 'wnl2 knows its peer is elsewhere');

  // ---- errors
  const exists = captureError(() => createVeth({ name: 'wnl0', peerName: 'wnlx' }, A));
  assert.ok(exists instanceof NetlinkError);
  assert.equal(exists.errnoName, 'EEXIST');
  assert.match(exists.message, /^create veth wnl0 \(peer wnlx\): EEXIST/);
  assert.equal(getLink('wnlx', A), undefined, 'nothing half-made');
  assert.equal(deleteLink('wnl-missing', A), false);
  assert.equal(deleteLink(99_999, A), false);
  assert.equal(getLink('nope', A), undefined);
  assert.equal(getLink(99_999, A), undefined);
  const down = captureError(() => setLinkUp(99_999, true, A));
  assert.ok(down instanceof NetlinkError && down.errnoName === 'ENODEV', String(down));
  assert.throws(() => createVeth({ name: 'this-name-is-too-long', peerName: 'x' }, A), /invalid interface name/);

  // ---- deleting: one end takes the pair; the namespaces go with our code
  assert.equal(deleteLink('wnl2', A), true);
  assert.equal(getLink('wnl3', B), undefined);
  assert.ok(!ipJson<IpLinkJson>(b, 'link', 'show').some((l) => l.ifname === 'wnl3'), 'wnl3 went with wnl2');
  for (const target of [A, B]) target.socket?.close();
  assert.equal(deleteNamedNetns(a.name), true);
  assert.equal(deleteNamedNetns(a.name), false);
  assert.ok(!listNetns().includes(a.name));
});

test('200 veth pairs created and deleted leak no descriptors and leave no links', (t) => {
  if (skipUnlessRoot(t)) return;
  const ns = namedNetns('leak');
  const target: NetlinkTarget = { netnsPath: ns.path };
  getLink('lo', target); // warm up: load and initialise everything once
  const before = fdCount();
  for (let i = 0; i < 200; i++) {
    // Half with a throw-away socket per call, half on one long-lived socket.
    if (i === 100) {
      const socket = new NetlinkSocket({ netnsPath: ns.path });
      try {
        for (; i < 200; i++) {
          createVeth({ name: `lk${i}a`, peerName: `lk${i}b` }, { socket });
          assert.equal(deleteLink(`lk${i}a`, { socket }), true);
        }
      } finally {
        socket.close();
      }
      break;
    }
    createVeth({ name: `lk${i}a`, peerName: `lk${i}b` }, target);
    assert.equal(deleteLink(`lk${i}a`, target), true);
  }
  assert.equal(fdCount(), before, 'open descriptors');
  assert.deepEqual(listLinks(target).map((l) => l.name), ['lo']);
  assert.deepEqual(ipJson<IpLinkJson>(ns, 'link', 'show').map((l) => l.ifname), ['lo']);
});

test('createNamedNetns makes a private directory a shared mount point, as iproute2 does', (t) => {
  if (skipUnlessRoot(t) || requireTools(t, 'umount')) return;
  const dir = mkdtempSync(join(tmpdir(), 'waggle-netns-'));
  cleanup.add(() => rmdirSync(dir), `directory ${dir}`);
  const name = `wnl-dir-${process.pid}`;
  const path = createNamedNetns(name, dir);
  cleanup.add(() => { execFileSync('umount', ['-l', dir]); }, `mount ${dir}`);
  cleanup.add(() => { deleteNamedNetns(name, dir); }, `netns ${name} in ${dir}`);
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const dirLine = mountinfo.find((l) => l.split(' ')[4] === dir);
  assert.match(dirLine ?? '', / shared:\d+/, 'the directory is a shared mount point');
  assert.ok(mountinfo.some((l) => l.split(' ')[4] === path && l.includes(' nsfs ')), 'the namespace is bind-mounted');
  const links = listLinks({ netnsPath: path });
  assert.deepEqual(links.map((l) => [l.name, l.up]), [['lo', true]]);
  // A second namespace reuses the mount point.
  const second = `${name}-2`;
  createNamedNetns(second, dir);
  cleanup.add(() => { deleteNamedNetns(second, dir); }, `netns ${second} in ${dir}`);
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4] === dir).length, 1);
  assert.equal(deleteNamedNetns(second, dir), true);
  assert.equal(deleteNamedNetns(name, dir), true);
  assert.equal(deleteNamedNetns(name, dir), false);
  assert.deepEqual(readdirSync(dir), []);
});

function captureError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}
