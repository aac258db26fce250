import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bestMatch, lookupVerdict, PolicyLookupIndex } from './lookup.js';
import { PolicyMatchType, type PolicyEntry } from './types.js';

function e(identity: number, proto: number, port: number, portPrefixLen: number, deny: boolean, cookie: number): PolicyEntry {
  const matchType =
    identity !== 0 ? (proto === 0 ? PolicyMatchType.l3Only : PolicyMatchType.l3l4) : proto === 0 ? PolicyMatchType.all : PolicyMatchType.l4Only;
  return { identity, proto, port, portPrefixLen, deny, matchType, cookie };
}

test('no entries: denied with no rule', () => {
  assert.deepEqual(lookupVerdict([], 1000, 6, 80), { verdict: 'denied', reason: 'no-rule', matchType: PolicyMatchType.none, cookie: 0 });
  const other = [e(1001, 6, 80, 16, false, 5)];
  assert.equal(lookupVerdict(other, 1000, 6, 80).reason, 'no-rule', 'identity must match exactly');
  assert.equal(lookupVerdict(other, 1001, 17, 80).reason, 'no-rule', 'protocol must match');
  assert.equal(lookupVerdict(other, 1001, 6, 81).reason, 'no-rule', 'port must be in the prefix');
  assert.equal(lookupVerdict(other, 1001, 6, 80).verdict, 'allowed');
});

test('port prefixes match every port inside them', () => {
  const entries = [e(1000, 6, 1024, 6, false, 7)];
  assert.equal(lookupVerdict(entries, 1000, 6, 1023).verdict, 'denied');
  assert.equal(lookupVerdict(entries, 1000, 6, 1024).verdict, 'allowed');
  assert.equal(lookupVerdict(entries, 1000, 6, 2047).verdict, 'allowed');
  assert.equal(lookupVerdict(entries, 1000, 6, 2048).verdict, 'denied');
});

test('longest prefix wins within one identity; proto 0 is shortest', () => {
  const entries = [
    e(1000, 0, 0, 0, true, 1),
    e(1000, 6, 0, 0, false, 2),
    e(1000, 6, 80, 16, true, 3),
  ];
  assert.equal(lookupVerdict(entries, 1000, 17, 53).cookie, 1, 'only the proto-0 entry matches UDP');
  assert.equal(lookupVerdict(entries, 1000, 17, 53).verdict, 'denied');
  const tcp = lookupVerdict(entries, 1000, 6, 443);
  assert.equal(tcp.verdict, 'allowed', 'TCP/0 is longer than proto 0');
  assert.equal(tcp.cookie, 2);
  assert.equal(tcp.matchType, PolicyMatchType.l3l4);
  const http = lookupVerdict(entries, 1000, 6, 80);
  assert.equal(http.verdict, 'denied');
  assert.equal(http.reason, 'deny-rule');
  assert.equal(http.cookie, 3);
  assert.deepEqual(http.entry, entries[2]);
  assert.deepEqual(bestMatch(entries, 1000, 6, 80), entries[2]);
});

test('a deny in either lookup wins', () => {
  const wildcardDeny = [e(1000, 6, 80, 16, false, 1), e(0, 6, 0, 0, true, 2)];
  const v = lookupVerdict(wildcardDeny, 1000, 6, 80);
  assert.deepEqual([v.verdict, v.reason, v.cookie, v.matchType], ['denied', 'deny-rule', 2, PolicyMatchType.l4Only]);
  const peerDeny = [e(1000, 0, 0, 0, true, 4), e(0, 0, 0, 0, false, 0)];
  const w = lookupVerdict(peerDeny, 1000, 6, 80);
  assert.deepEqual([w.verdict, w.cookie, w.matchType], ['denied', 4, PolicyMatchType.l3Only]);
  assert.equal(lookupVerdict(peerDeny, 1001, 6, 80).verdict, 'allowed', 'other peers only hit the wildcard allow');
  const bothDeny = [e(1000, 6, 80, 16, true, 8), e(0, 6, 80, 16, true, 9)];
  assert.equal(lookupVerdict(bothDeny, 1000, 6, 80).cookie, 8, 'the peer-identity deny is reported first');
});

test('allows: the peer-identity match is preferred, the wildcard serves others', () => {
  const entries = [e(0, 0, 0, 0, false, 0), e(1000, 6, 443, 16, false, 11)];
  const v = lookupVerdict(entries, 1000, 6, 443);
  assert.deepEqual([v.verdict, v.reason, v.cookie, v.matchType], ['allowed', 'allow', 11, PolicyMatchType.l3l4]);
  const w = lookupVerdict(entries, 1000, 17, 53);
  assert.deepEqual([w.verdict, w.cookie, w.matchType], ['allowed', 0, PolicyMatchType.all]);
  assert.equal(lookupVerdict(entries, 0, 6, 443).cookie, 0, 'identity 0 is looked up once');
});

test('ICMP entries match the type whatever the code', () => {
  const entries = [e(1000, 1, 8 << 8, 8, false, 21)];
  assert.equal(lookupVerdict(entries, 1000, 1, (8 << 8) | 0).verdict, 'allowed');
  assert.equal(lookupVerdict(entries, 1000, 1, (8 << 8) | 5).verdict, 'allowed');
  assert.equal(lookupVerdict(entries, 1000, 1, 0 << 8).verdict, 'denied');
  assert.equal(lookupVerdict(entries, 1000, 58, 8 << 8).verdict, 'denied');
});

test('duplicate keys resolve deterministically: deny, then lowest cookie', () => {
  assert.equal(lookupVerdict([e(5, 6, 80, 16, false, 1), e(5, 6, 80, 16, true, 9)], 5, 6, 80).verdict, 'denied');
  assert.equal(lookupVerdict([e(5, 6, 80, 16, false, 9), e(5, 6, 80, 16, false, 3)], 5, 6, 80).cookie, 3);
});

test('PolicyLookupIndex agrees with lookupVerdict on random entries', () => {
  let seed = 99;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const ids = [0, 1000, 1001, 2];
  const protos = [0, 6, 17, 1];
  for (let round = 0; round < 50; round++) {
    const entries: PolicyEntry[] = [];
    const n = rand(12);
    for (let i = 0; i < n; i++) {
      const proto = protos[rand(protos.length)]!;
      const len = proto === 0 ? 0 : rand(17);
      const port = proto === 0 ? 0 : (rand(65536) >> (16 - len)) << (16 - len) & 0xffff;
      entries.push(e(ids[rand(ids.length)]!, proto, port, len, rand(3) === 0, i + 1));
    }
    const index = new PolicyLookupIndex(entries);
    for (let q = 0; q < 40; q++) {
      const peer = ids[rand(ids.length)]!;
      const proto = [6, 17, 1, 58][rand(4)]!;
      const port = rand(2) ? rand(65536) : (entries[rand(Math.max(1, entries.length))]?.port ?? 0);
      assert.deepEqual(index.lookup(peer, proto, port), lookupVerdict(entries, peer, proto, port));
    }
  }
});
