/** Codec of `struct lxc_config` (bpf/include/lxc_config.h): the `lxc_config` map, host-side veth ifindex → endpoint. */
import { ipv4, ipv6, mac, struct, u32, type StructCodec } from '../../bpf/codec.js';

/** Entries of the `lxc_config` map (`LXC_CONFIG_MAX`). */
export const LXC_CONFIG_MAX = 65536;

/** Who is behind one host-side veth, as the endpoint programs read it on every packet. */
export interface LxcConfig {
  /** The agent's endpoint ID (1..65535). */
  endpointId: number;
  /** The endpoint's IPv4 address; `0.0.0.0` when it has none. */
  ipv4: string;
  /** The endpoint's IPv6 address; `::` when it has none. */
  ipv6: string;
  /** The endpoint's own MAC (its eth0). */
  mac: string;
  /** The host-side veth's MAC: the router MAC the endpoint sees. */
  hostMac: string;
  /** `LXC_CONFIG_F_*` flags; none defined yet. */
  flags: number;
  /** The endpoint's security identity. */
  identity: number;
}

export const lxcConfig: StructCodec<LxcConfig> = struct<LxcConfig>('lxc_config', 44, {
  endpointId: { offset: 0, codec: u32 },
  ipv4: { offset: 4, codec: ipv4 },
  ipv6: { offset: 8, codec: ipv6 },
  mac: { offset: 24, codec: mac },
  hostMac: { offset: 30, codec: mac },
  flags: { offset: 36, codec: u32 },
  identity: { offset: 40, codec: u32 },
});
