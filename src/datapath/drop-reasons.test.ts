import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { bpfObjectPath } from './objects.js';
import { DROP_REASONS, REASON_FORWARDED, dropReason, dropReasonCode, dropReasonName } from './drop-reasons.js';

const header = join(dirname(dirname(bpfObjectPath('x'))), '..', 'bpf', 'include', 'drop_reasons.h');

interface Parsed {
  macro: string;
  code: number;
  name: string;
  description: string;
}

/** Every `#define DROP_*` line of the header, parsed strictly. */
function parseHeader(): Parsed[] {
  const text = readFileSync(header, 'utf8');
  const out: Parsed[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('#define DROP_')) continue;
    const m = /^#define (DROP_\w+) (\d+) \/\* (\w+): (.+?) \*\/$/.exec(line);
    assert.ok(m, `malformed drop reason line in drop_reasons.h: ${line}`);
    out.push({ macro: m[1] as string, code: Number(m[2]), name: m[3] as string, description: m[4] as string });
  }
  return out;
}

test('the TypeScript drop reason table matches bpf/include/drop_reasons.h exactly', () => {
  const parsed = parseHeader();
  assert.ok(parsed.length >= 70, `parsed ${parsed.length} reasons`);
  assert.deepEqual(
    DROP_REASONS.map((r) => ({ code: r.code, name: r.name, description: r.description })),
    parsed.map(({ code, name, description }) => ({ code, name, description })),
  );
});

test('drop reason macros are DROP_ + the Hubble name, numbers and names unique and ascending', () => {
  const parsed = parseHeader();
  for (const p of parsed) {
    const expected = p.name.startsWith('DROP_') ? p.name : `DROP_${p.name}`;
    assert.equal(p.macro, expected, `macro of ${p.name}`);
  }
  const codes = parsed.map((p) => p.code);
  assert.deepEqual(codes, [...codes].sort((a, b) => a - b), 'ascending');
  assert.equal(new Set(codes).size, codes.length, 'unique numbers');
  assert.equal(new Set(parsed.map((p) => p.name)).size, parsed.length, 'unique names');
  assert.ok(codes.every((c) => c >= 130 && c <= 255), 'drop reasons are 130..255');
  assert.ok(!codes.includes(159), '159 stays unassigned (absent from Hubble\'s enum)');
});

test("spot checks against Hubble's flow.proto DropReason", () => {
  const expected: Record<string, number> = {
    INVALID_SOURCE_MAC: 130, INVALID_DESTINATION_MAC: 131, INVALID_SOURCE_IP: 132, POLICY_DENIED: 133,
    INVALID_PACKET_DROPPED: 134, UNSUPPORTED_L3_PROTOCOL: 139, UNKNOWN_L3_TARGET_ADDRESS: 150,
    STALE_OR_UNROUTABLE_IP: 151, CT_MAP_INSERTION_FAILED: 155, SERVICE_BACKEND_NOT_FOUND: 158,
    NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT: 160, FIB_LOOKUP_FAILED: 169, POLICY_DENY: 181, VLAN_FILTERED: 182,
    AUTH_REQUIRED: 189, NO_EGRESS_GATEWAY: 194, UNENCRYPTED_TRAFFIC: 195, TTL_EXCEEDED: 196, NO_NODE_ID: 197,
    DROP_HOST_NOT_READY: 202, DROP_EP_NOT_READY: 203,
  };
  for (const [name, code] of Object.entries(expected)) assert.equal(dropReasonCode(name), code, name);
});

test('lookups', () => {
  assert.equal(dropReason(132)?.name, 'INVALID_SOURCE_IP');
  assert.equal(dropReason(159), undefined);
  assert.equal(dropReasonName(REASON_FORWARDED), 'DROP_REASON_UNKNOWN');
  assert.equal(dropReasonName(181), 'POLICY_DENY');
  assert.equal(dropReasonName(250), 'UNKNOWN_DROP_REASON_250');
  assert.throws(() => dropReasonCode('NOPE'), /unknown drop reason/);
});
