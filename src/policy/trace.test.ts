import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTracePort } from './trace.js';

test('--dport: port/protocol, TCP by default, ICMP types as type << 8', () => {
  assert.deepEqual(parseTracePort('80/tcp'), { proto: 6, protocol: 'tcp', port: 80 });
  assert.deepEqual(parseTracePort('53/UDP'), { proto: 17, protocol: 'udp', port: 53 });
  assert.deepEqual(parseTracePort('443'), { proto: 6, protocol: 'tcp', port: 443 });
  assert.deepEqual(parseTracePort('8/icmp'), { proto: 1, protocol: 'icmp', port: 8 << 8 });
  assert.deepEqual(parseTracePort('128/icmpv6'), { proto: 58, protocol: 'icmpv6', port: 128 << 8 });
});

test('--dport: bad ports and protocols are refused with the value named', () => {
  assert.throws(() => parseTracePort('http'), /--dport must look like 80\/tcp.*"http"/);
  assert.throws(() => parseTracePort('80/gre'), /"80\/gre"/);
  assert.throws(() => parseTracePort('0/tcp'), /port must be 1-65535/);
  assert.throws(() => parseTracePort('70000/udp'), /port must be 1-65535/);
  assert.throws(() => parseTracePort('300/icmp'), /ICMP type must be 0-255/);
});
