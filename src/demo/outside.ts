/**
 * The demo's stand-in for a machine outside the node: a network namespace
 * joined to the node by a veth pair. The node's end carries a node address
 * and is the demo agent's `--devices` device, so NodePort services answer a
 * client in the namespace as they would a client on the network.
 */
import { addAddress } from '../netlink/addr.js';
import { createVeth, deleteLink, getLink, setLinkUp } from '../netlink/link.js';
import { closeNetns, createNamedNetns, deleteNamedNetns, openNetns } from '../netlink/netns.js';

export interface Outside {
  /** Namespace name and path (for nsenter). */
  name: string;
  path: string;
  /** The node's end of the link (the agent's --devices). */
  device: string;
  /** The node's addresses on that link, and the outside client's. */
  node: { ipv4: string; ipv6: string };
  client: { ipv4: string; ipv6: string };
  /** Removes the namespace and the link. Safe to repeat. */
  remove(): void;
}

function ifindexOf(name: string, target?: { netnsPath: string }): number {
  const link = getLink(name, target);
  if (!link) throw new Error(`the demo's link ${name} vanished`);
  return link.ifindex;
}

/** Creates the outside namespace `name` and its link `device` (addresses: .1 on the node, .2 outside). */
export function createOutside(name: string, device: string, net: { ipv4: string; ipv6: string }): Outside {
  const node = { ipv4: `${net.ipv4}.1`, ipv6: `${net.ipv6}::1` };
  const client = { ipv4: `${net.ipv4}.2`, ipv6: `${net.ipv6}::2` };
  const remove = (): void => {
    if (getLink(device)) deleteLink(device);
    deleteNamedNetns(name);
  };
  const path = createNamedNetns(name);
  try {
    const fd = openNetns(path);
    try {
      createVeth({ name: device, peerName: 'eth0', peerNetnsFd: fd });
    } finally {
      closeNetns(fd);
    }
    const ifindex = ifindexOf(device);
    addAddress(ifindex, `${node.ipv4}/24`);
    addAddress(ifindex, `${node.ipv6}/64`, { nodad: true });
    setLinkUp(ifindex, true);
    const inside = { netnsPath: path };
    const eth0 = ifindexOf('eth0', inside);
    addAddress(eth0, `${client.ipv4}/24`, {}, inside);
    addAddress(eth0, `${client.ipv6}/64`, { nodad: true }, inside);
    setLinkUp(eth0, true, inside);
  } catch (err) {
    remove();
    throw err;
  }
  return { name, path, device, node, client, remove };
}
