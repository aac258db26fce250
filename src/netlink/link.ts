/**
 * Network devices over rtnetlink: veth pairs, lookup, up/down, MAC, MTU,
 * moving between namespaces, deletion. Every call takes an optional
 * {@link NetlinkTarget}: an open socket, or a namespace to act in.
 */
import { closeNetns, openNetns } from './netns.js';
import {
  AF_UNSPEC, IFF_UP, IFLA_ADDRESS, IFLA_EXT_MASK, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINK,
  IFLA_LINK_NETNSID, IFLA_LINKINFO, IFLA_MASTER, IFLA_MTU, IFLA_NET_NS_FD, NLM_F_CREATE, NLM_F_EXCL,
  RTEXT_FILTER_SKIP_STATS, RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK, VETH_INFO_PEER,
  attrBytes, attrNested, attrS32, attrString, attrU32, checkIfname, decodeIfinfomsg, decodeS32, decodeString,
  decodeU32, encodeAttrs, encodeIfinfomsg, formatMac, parseAttrs, parseMac, type NlAttr,
} from './message.js';
import { BpfError } from '../bpf/errors.js';
import { NetlinkError, isNetlinkError, withSocket, type NetlinkSocket, type NetlinkTarget } from './socket.js';

const ENODEV = 19;

/** A network device as the kernel reports it. */
export interface LinkInfo {
  ifindex: number;
  name: string;
  /** Hardware address (`aa:bb:…`); absent for devices without one. */
  mac?: string;
  mtu: number;
  /** Administratively up (`IFF_UP`). */
  up: boolean;
  /** All `IFF_*` flags (e.g. `IFF_LOWER_UP` = 0x10000: carrier). */
  flags: number;
  /** Link kind from `IFLA_INFO_KIND`: `veth`, `bridge`, … (absent for physical devices and `lo`). */
  kind?: string;
  /**
   * `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace). The
   * kernel leaves it out when it equals `ifindex`, which happens for a veth whose
   * peer sits in another namespace under the same index.
   */
  link?: number;
  /** `IFLA_LINK_NETNSID`: the peer's namespace id, when it lives in another namespace. */
  linkNetnsId?: number;
  /** Ifindex of the master device (bridge, bond), if any. */
  master?: number;
}

/** A device by ifindex or by name. */
export type LinkRef = number | string;

/** Decodes an `RTM_NEWLINK` body. */
export function decodeLink(body: Buffer): LinkInfo {
  const hdr = decodeIfinfomsg(body);
  const attrs = parseAttrs(body, 16);
  const link: LinkInfo = {
    ifindex: hdr.index,
    name: decodeString(attrs.get(IFLA_IFNAME) ?? Buffer.alloc(0)),
    mtu: decodeU32(attrs.get(IFLA_MTU)) ?? 0,
    up: (hdr.flags & IFF_UP) !== 0,
    flags: hdr.flags,
  };
  const addr = attrs.get(IFLA_ADDRESS);
  if (addr !== undefined && addr.length > 0) link.mac = formatMac(addr);
  const info = attrs.get(IFLA_LINKINFO);
  const kind = info && parseAttrs(info).get(IFLA_INFO_KIND);
  if (kind !== undefined) link.kind = decodeString(kind);
  const parent = decodeU32(attrs.get(IFLA_LINK));
  if (parent !== undefined && parent !== 0) link.link = parent;
  const nsid = decodeS32(attrs.get(IFLA_LINK_NETNSID));
  if (nsid !== undefined) link.linkNetnsId = nsid;
  const master = decodeU32(attrs.get(IFLA_MASTER));
  if (master !== undefined) link.master = master;
  return link;
}

function refHeader(ref: LinkRef): { index: number; attrs: NlAttr[] } {
  if (typeof ref === 'number') return { index: ref, attrs: [] };
  checkIfname(ref);
  return { index: 0, attrs: [attrString(IFLA_IFNAME, ref)] };
}

/** `wgl0 (ifindex 7)` / `ifindex 7` / `wgl0`, for error messages. Looks the name up only when asked. */
export function describeLink(socket: NetlinkSocket, ref: LinkRef): string {
  if (typeof ref === 'string') return ref;
  try {
    const link = getLink(ref, { socket });
    return link ? `${link.name} (ifindex ${ref})` : `ifindex ${ref}`;
  } catch {
    return `ifindex ${ref}`;
  }
}

/**
 * Looks a device up by ifindex or name. Returns undefined when there is none.
 */
export function getLink(ref: LinkRef, target?: NetlinkTarget): LinkInfo | undefined {
  const { index, attrs } = refHeader(ref);
  const body = Buffer.concat([
    encodeIfinfomsg({ family: AF_UNSPEC, index }),
    encodeAttrs([...attrs, attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)]),
  ]);
  return withSocket(target, (s) => {
    try {
      const reply = s.request(RTM_GETLINK, 0, body, `look up link ${typeof ref === 'number' ? `ifindex ${ref}` : ref}`)[0];
      return reply === undefined ? undefined : decodeLink(reply);
    } catch (err) {
      if (isNetlinkError(err, 'ENODEV')) return undefined;
      throw err;
    }
  });
}

/** Every device in the namespace, in ifindex order. */
export function listLinks(target?: NetlinkTarget): LinkInfo[] {
  const body = Buffer.concat([encodeIfinfomsg(), encodeAttrs([attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)])]);
  return withSocket(target, (s) => s.dump(RTM_GETLINK, body, 'list links').map(decodeLink))
    .sort((a, b) => a.ifindex - b.ifindex);
}

/** Options of {@link createVeth}. */
export interface VethOptions {
  /** Name of the end created in the target namespace. */
  name: string;
  /** Name of the other end. */
  peerName: string;
  /** Create the peer directly inside the namespace open at this descriptor (default: next to `name`). */
  peerNetnsFd?: number;
  /** MTU of both ends (default: the kernel's, 1500). */
  mtu?: number;
  /** MAC of `name` (default: random). */
  mac?: string;
  /** MAC of the peer (default: random). */
  peerMac?: string;
}

/** Indexes of a created veth pair. */
export interface VethPair {
  /** Ifindex of `name`, in the target namespace. */
  ifindex: number;
  /** Ifindex of the peer, in the peer's namespace. */
  peerIfindex: number;
}

/**
 * Creates a veth pair (`RTM_NEWLINK`, kind `veth`, `VETH_INFO_PEER`), with the
 * peer in `peerNetnsFd` if given. Both ends start down. Throws
 * {@link NetlinkError} `EEXIST` if either name is taken.
 */
export function createVeth(opts: VethOptions, target?: NetlinkTarget): VethPair {
  checkIfname(opts.name);
  checkIfname(opts.peerName);
  const common: NlAttr[] = opts.mtu === undefined ? [] : [attrU32(IFLA_MTU, opts.mtu)];
  const peerAttrs: NlAttr[] = [attrString(IFLA_IFNAME, opts.peerName), ...common];
  if (opts.peerMac !== undefined) peerAttrs.push(attrBytes(IFLA_ADDRESS, parseMac(opts.peerMac)));
  if (opts.peerNetnsFd !== undefined) peerAttrs.push(attrS32(IFLA_NET_NS_FD, opts.peerNetnsFd));
  const peer = Buffer.concat([encodeIfinfomsg(), encodeAttrs(peerAttrs)]);
  const attrs: NlAttr[] = [attrString(IFLA_IFNAME, opts.name), ...common];
  if (opts.mac !== undefined) attrs.push(attrBytes(IFLA_ADDRESS, parseMac(opts.mac)));
  attrs.push(attrNested(IFLA_LINKINFO, [
    attrString(IFLA_INFO_KIND, 'veth'),
    attrNested(IFLA_INFO_DATA, [{ type: VETH_INFO_PEER, value: peer }]),
  ]));
  const body = Buffer.concat([encodeIfinfomsg(), encodeAttrs(attrs)]);
  return withSocket(target, (s) => {
    s.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, `create veth ${opts.name} (peer ${opts.peerName})`);
    const link = getLink(opts.name, { socket: s });
    if (link === undefined) throw new BpfError('NETLINK_ERR', `create veth ${opts.name}: created, but it vanished at once`);
    // No IFLA_LINK means the peer has the same index (see LinkInfo.link).
    return { ifindex: link.ifindex, peerIfindex: link.link ?? link.ifindex };
  });
}

function modifyLink(s: NetlinkSocket, ref: LinkRef, extra: NlAttr[], hdr: { flags?: number; change?: number }, what: (link: string) => string): void {
  const { index, attrs } = refHeader(ref);
  const body = Buffer.concat([encodeIfinfomsg({ index, ...hdr }), encodeAttrs([...attrs, ...extra])]);
  s.request(RTM_NEWLINK, 0, body, () => what(describeLink(s, ref)));
}

/** Sets a device administratively up or down. */
export function setLinkUp(ref: LinkRef, up: boolean, target?: NetlinkTarget): void {
  withSocket(target, (s) => modifyLink(s, ref, [], { flags: up ? IFF_UP : 0, change: IFF_UP }, (l) => `set link ${l} ${up ? 'up' : 'down'}`));
}

/** Sets a device's MAC address (`aa:bb:cc:dd:ee:ff`). */
export function setLinkMac(ref: LinkRef, mac: string, target?: NetlinkTarget): void {
  const extra = [attrBytes(IFLA_ADDRESS, parseMac(mac))];
  withSocket(target, (s) => modifyLink(s, ref, extra, {}, (l) => `set MAC of ${l} to ${mac}`));
}

/** Sets a device's MTU. */
export function setLinkMtu(ref: LinkRef, mtu: number, target?: NetlinkTarget): void {
  withSocket(target, (s) => modifyLink(s, ref, [attrU32(IFLA_MTU, mtu)], {}, (l) => `set MTU of ${l} to ${mtu}`));
}

/**
 * Moves a device into another network namespace (an open descriptor, or a
 * path such as `/var/run/netns/NAME`), renaming it there when `newName` is
 * given. Its addresses and routes do not follow, and it arrives down.
 */
export function moveLinkToNetns(ref: LinkRef, netns: number | string, newName?: string, target?: NetlinkTarget): void {
  if (newName !== undefined) checkIfname(newName);
  const where = typeof netns === 'number' ? `namespace fd ${netns}` : netns;
  const what = (l: string): string => `move link ${l} to ${where}${newName === undefined ? '' : ` as ${newName}`}`;
  const fd = typeof netns === 'number' ? netns : openNetns(netns);
  try {
    withSocket(target, (s) => {
      let key = ref;
      const extra: NlAttr[] = [attrS32(IFLA_NET_NS_FD, fd)];
      if (newName !== undefined) {
        // The name cannot be both the lookup key and the new name: look the index up.
        if (typeof ref === 'string') {
          const link = getLink(ref, { socket: s });
          if (link === undefined) throw new NetlinkError(what(ref), ENODEV);
          key = link.ifindex;
        }
        extra.push(attrString(IFLA_IFNAME, newName));
      }
      modifyLink(s, key, extra, {}, what);
    });
  } finally {
    if (typeof netns === 'string') closeNetns(fd);
  }
}

/**
 * Deletes a device (for a veth, both ends). Returns false when there is no such
 * device (`ENODEV`), true when it was deleted.
 */
export function deleteLink(ref: LinkRef, target?: NetlinkTarget): boolean {
  const { index, attrs } = refHeader(ref);
  const body = Buffer.concat([encodeIfinfomsg({ index }), encodeAttrs(attrs)]);
  return withSocket(target, (s) => {
    try {
      s.request(RTM_DELLINK, 0, body, `delete link ${typeof ref === 'number' ? `ifindex ${ref}` : ref}`);
      return true;
    } catch (err) {
      if (isNetlinkError(err, 'ENODEV')) return false;
      throw err;
    }
  });
}
