/** Codecs of `struct policy_key`, `struct policy_value` and `struct policy_state` (bpf/include/policy.h): the `policy` LPM trie. */
import { BpfUsageError } from '../../bpf/errors.js';
import { be16, be32, struct, u32, u8, type Codec, type StructCodec } from '../../bpf/codec.js';

/** Entries of the `policy` map (`POLICY_MAX`). */
export const POLICY_MAX = 1048576;
export const POLICY_INGRESS = 1;
export const POLICY_EGRESS = 2;
/** Prefix bits of (endpoint, direction, pad, identity); of that plus protocol and pad2; of the whole key. */
export const POLICY_PREFIX_EXACT = 64;
export const POLICY_PREFIX_PROTO = 80;
export const POLICY_PREFIX_FULL = 96;

/** The raw key: every field after prefixlen is big endian in memory (so the trie's bit order is numeric order). */
export interface PolicyKeyRaw {
  prefixlen: number;
  endpointId: number;
  direction: number;
  identity: number;
  proto: number;
  dport: number;
}

export const policyKeyRaw: StructCodec<PolicyKeyRaw> = struct<PolicyKeyRaw>('policy_key', 16, {
  prefixlen: { offset: 0, codec: u32 },
  endpointId: { offset: 4, codec: be16 },
  direction: { offset: 6, codec: u8 },
  identity: { offset: 8, codec: be32 },
  proto: { offset: 12, codec: u8 },
  dport: { offset: 14, codec: be16 },
});

/** One policy entry's key as the agent thinks of it. */
export interface PolicyKey {
  endpointId: number;
  direction: 'ingress' | 'egress';
  /** 0 = any peer. */
  identity: number;
  /** 0 = any protocol (the port is then ignored). */
  proto: number;
  port: number;
  /** Bits of `port` that matter (0..16); ignored when proto is 0. */
  portPrefixLen: number;
}

/** `struct policy_key` as a {@link PolicyKey}: the key codec of the `policy` map. */
export const policyKey: Codec<PolicyKey> = {
  size: policyKeyRaw.size,
  encode(k, buf, offset) {
    if (k.proto === 0) {
      policyKeyRaw.encode({ prefixlen: POLICY_PREFIX_EXACT, endpointId: k.endpointId, direction: k.direction === 'ingress' ? POLICY_INGRESS : POLICY_EGRESS, identity: k.identity, proto: 0, dport: 0 }, buf, offset);
      return;
    }
    if (!Number.isInteger(k.portPrefixLen) || k.portPrefixLen < 0 || k.portPrefixLen > 16) throw new BpfUsageError(`portPrefixLen must be 0..16, got ${k.portPrefixLen}`);
    const mask = k.portPrefixLen === 0 ? 0 : (0xffff << (16 - k.portPrefixLen)) & 0xffff;
    policyKeyRaw.encode({
      prefixlen: POLICY_PREFIX_PROTO + k.portPrefixLen, endpointId: k.endpointId,
      direction: k.direction === 'ingress' ? POLICY_INGRESS : POLICY_EGRESS, identity: k.identity, proto: k.proto, dport: k.port & mask,
    }, buf, offset);
  },
  decode(buf, offset) {
    const r = policyKeyRaw.decode(buf, offset);
    const direction = r.direction === POLICY_INGRESS ? 'ingress' : 'egress';
    if (r.prefixlen <= POLICY_PREFIX_EXACT) return { endpointId: r.endpointId, direction, identity: r.identity, proto: 0, port: 0, portPrefixLen: 0 };
    return { endpointId: r.endpointId, direction, identity: r.identity, proto: r.proto, port: r.dport, portPrefixLen: r.prefixlen - POLICY_PREFIX_PROTO };
  },
};

export interface PolicyValue {
  cookie: number;
  /** 1 for a deny rule. */
  deny: number;
  /** `POLICY_MATCH_*`. */
  matchType: number;
}

export const policyValue: StructCodec<PolicyValue> = struct<PolicyValue>('policy_value', 8, {
  cookie: { offset: 0, codec: u32 },
  deny: { offset: 4, codec: u8 },
  matchType: { offset: 5, codec: u8 },
});

export interface PolicyState {
  revision: number;
}

export const policyState: StructCodec<PolicyState> = struct<PolicyState>('policy_state', 8, {
  revision: { offset: 0, codec: u32 },
});

