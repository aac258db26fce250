/** Codecs of `struct endpoint_key` and `struct endpoint_info` (bpf/include/endpoint.h): the `endpoints` map. */
import { isIPv4, isIPv6 } from 'node:net';
import { BpfUsageError } from '../../bpf/errors.js';
import {
  bytes, formatIPv6, mac, parseIPv4, parseIPv6, struct, u32, u8,
  type Codec, type StructCodec,
} from '../../bpf/codec.js';

/** `ENDPOINT_FAMILY_IPV4` (AF_INET). */
export const ENDPOINT_FAMILY_IPV4 = 2;
/** `ENDPOINT_FAMILY_IPV6` (AF_INET6). */
export const ENDPOINT_FAMILY_IPV6 = 10;
/** Entries of the `endpoints` map (`ENDPOINTS_MAX`). */
export const ENDPOINTS_MAX = 65536;

/** One address of an endpoint, as the map stores it. */
export interface EndpointKey {
  family: number;
  /** 16 bytes, network order; IPv4 in the first 4, the rest zero. */
  addr: Uint8Array;
}

export const endpointKey: StructCodec<EndpointKey> = struct<EndpointKey>('endpoint_key', 20, {
  family: { offset: 0, codec: u8 },
  addr: { offset: 4, codec: bytes(16) },
});

/** Where a local endpoint is and how to reach it at layer 2. */
export interface EndpointInfo {
  /** ifindex of the endpoint's host-side veth, in the node's namespace. */
  ifindex: number;
  endpointId: number;
  /** The endpoint's own MAC. */
  mac: string;
  /** The host-side veth's MAC: the router MAC the endpoint sees. */
  nodeMac: string;
  /** `ENDPOINT_F_*` flags; none defined yet. */
  flags: number;
  /** The endpoint's security identity. */
  identity: number;
}

export const endpointInfo: StructCodec<EndpointInfo> = struct<EndpointInfo>('endpoint_info', 28, {
  ifindex: { offset: 0, codec: u32 },
  endpointId: { offset: 4, codec: u32 },
  mac: { offset: 8, codec: mac },
  nodeMac: { offset: 14, codec: mac },
  flags: { offset: 20, codec: u32 },
  identity: { offset: 24, codec: u32 },
});

/** The key of an IPv4 or IPv6 address given as text. */
export function endpointKeyOf(ip: string): EndpointKey {
  const addr = new Uint8Array(16);
  if (isIPv4(ip)) {
    addr.set(parseIPv4(ip));
    return { family: ENDPOINT_FAMILY_IPV4, addr };
  }
  if (isIPv6(ip)) {
    addr.set(parseIPv6(ip));
    return { family: ENDPOINT_FAMILY_IPV6, addr };
  }
  throw new BpfUsageError(`not an IP address: ${JSON.stringify(ip)}`);
}

/** The address of a key as text. */
export function endpointKeyAddress(key: EndpointKey): string {
  if (key.family === ENDPOINT_FAMILY_IPV4) return Array.from(key.addr.subarray(0, 4)).join('.');
  if (key.family === ENDPOINT_FAMILY_IPV6) return formatIPv6(key.addr);
  throw new BpfUsageError(`endpoint key with unknown family ${key.family}`);
}

/** `struct endpoint_key` as IP text: the key codec to type the `endpoints` map with. */
export const endpointIp: Codec<string> = {
  size: endpointKey.size,
  encode: (ip, buf, offset) => endpointKey.encode(endpointKeyOf(ip), buf, offset),
  decode: (buf, offset) => endpointKeyAddress(endpointKey.decode(buf, offset)),
};
