/**
 * Neighbour (ARP / NDP) entries over rtnetlink (`RTM_NEWNEIGH`,
 * `RTM_DELNEIGH`, `RTM_GETNEIGH`).
 */
import {
  AF_UNSPEC, NDA_DST, NDA_LLADDR, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NUD_DELAY, NUD_FAILED, NUD_INCOMPLETE,
  NUD_NOARP, NUD_PERMANENT, NUD_PROBE, NUD_REACHABLE, NUD_STALE, RTM_DELNEIGH, RTM_GETNEIGH, RTM_NEWNEIGH, afOf,
  attrBytes, decodeNdmsg, encodeAttrs, encodeNdmsg, familyOfAf, formatIp, formatMac, parseAttrs, parseIp, parseMac,
  type IpFamily,
} from './message.js';
import { describeLink } from './link.js';
import { isNetlinkError, withSocket, type NetlinkTarget } from './socket.js';

/** Options of {@link addNeighbor}. */
export interface AddNeighborOptions {
  /** A static entry that never ages out (default true, as `ip neigh add`); false: `reachable`, then aging as usual. */
  permanent?: boolean;
  /** Overwrite an existing entry instead of failing with `EEXIST`. */
  replace?: boolean;
}

/** A neighbour entry as the kernel reports it. */
export interface NeighborInfo {
  ifindex: number;
  family: IpFamily;
  ip: string;
  /** Link-layer address; absent while unresolved. */
  mac?: string;
  /** `NUD_*` bits. */
  state: number;
  /** The state bits by name, e.g. `['PERMANENT']`. */
  states: string[];
  /** `NTF_*` flags. */
  flags: number;
}

const STATE_NAMES: readonly [number, string][] = [
  [NUD_INCOMPLETE, 'INCOMPLETE'], [NUD_REACHABLE, 'REACHABLE'], [NUD_STALE, 'STALE'], [NUD_DELAY, 'DELAY'],
  [NUD_PROBE, 'PROBE'], [NUD_FAILED, 'FAILED'], [NUD_NOARP, 'NOARP'], [NUD_PERMANENT, 'PERMANENT'],
];

/**
 * Adds a neighbour entry `ip` → `mac` on device `ifindex`. Throws
 * {@link NetlinkError} `EEXIST` if there is one already (unless `replace`).
 */
export function addNeighbor(ifindex: number, ip: string, mac: string, opts: AddNeighborOptions = {}, target?: NetlinkTarget): void {
  const addr = parseIp(ip);
  const body = Buffer.concat([
    encodeNdmsg({ family: afOf(addr.family), ifindex, state: opts.permanent === false ? NUD_REACHABLE : NUD_PERMANENT }),
    encodeAttrs([attrBytes(NDA_DST, addr.bytes), attrBytes(NDA_LLADDR, parseMac(mac))]),
  ]);
  const flags = NLM_F_CREATE | (opts.replace ? NLM_F_REPLACE : NLM_F_EXCL);
  withSocket(target, (s) => {
    s.request(RTM_NEWNEIGH, flags, body, () => `add neighbour ${ip} lladdr ${mac} on ${describeLink(s, ifindex)}`);
  });
}

/** Deletes the entry for `ip` on device `ifindex`. Returns false when there is none. */
export function deleteNeighbor(ifindex: number, ip: string, target?: NetlinkTarget): boolean {
  const addr = parseIp(ip);
  const body = Buffer.concat([encodeNdmsg({ family: afOf(addr.family), ifindex }), encodeAttrs([attrBytes(NDA_DST, addr.bytes)])]);
  return withSocket(target, (s) => {
    try {
      s.request(RTM_DELNEIGH, 0, body, () => `delete neighbour ${ip} on ${describeLink(s, ifindex)}`);
      return true;
    } catch (err) {
      if (isNetlinkError(err, 'ENOENT')) return false;
      throw err;
    }
  });
}

/** Decodes an `RTM_NEWNEIGH` body; undefined for non-IP entries (bridge FDB). */
export function decodeNeighbor(body: Buffer): NeighborInfo | undefined {
  const hdr = decodeNdmsg(body);
  const family = familyOfAf(hdr.family);
  if (family === undefined) return undefined;
  const attrs = parseAttrs(body, 12);
  const dst = attrs.get(NDA_DST);
  if (dst === undefined) return undefined;
  const info: NeighborInfo = {
    ifindex: hdr.ifindex,
    family,
    ip: formatIp(dst),
    state: hdr.state,
    states: STATE_NAMES.filter(([bit]) => (hdr.state & bit) !== 0).map(([, name]) => name),
    flags: hdr.flags,
  };
  const ll = attrs.get(NDA_LLADDR);
  if (ll !== undefined && ll.length > 0) info.mac = formatMac(ll);
  return info;
}

/** Options of {@link listNeighbors}. */
export interface ListNeighborOptions {
  /** Only this family (default both). */
  family?: IpFamily;
}

/** The neighbour entries of device `ifindex`, or of every device when it is undefined. */
export function listNeighbors(ifindex?: number, opts: ListNeighborOptions = {}, target?: NetlinkTarget): NeighborInfo[] {
  const body = encodeNdmsg({ family: opts.family === undefined ? AF_UNSPEC : afOf(opts.family) });
  return withSocket(target, (s) => s.dump(RTM_GETNEIGH, body, 'list neighbours'))
    .map(decodeNeighbor)
    .filter((n): n is NeighborInfo => n !== undefined && (ifindex === undefined || n.ifindex === ifindex));
}
