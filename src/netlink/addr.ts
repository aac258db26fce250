/**
 * IPv4 and IPv6 interface addresses over rtnetlink (`RTM_NEWADDR`,
 * `RTM_DELADDR`, `RTM_GETADDR`).
 */
import {
  AF_UNSPEC, IFA_ADDRESS, IFA_F_NODAD, IFA_FLAGS, IFA_LABEL, IFA_LOCAL, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
  RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR, afOf, attrBytes, attrU32, decodeIfaddrmsg, decodeString, decodeU32, encodeAttrs,
  encodeIfaddrmsg, familyOfAf, formatIp, parseAttrs, parseCidr, scopeName, scopeNumber, type IpFamily, type NlAttr,
  type Scope,
} from './message.js';
import { describeLink } from './link.js';
import { isNetlinkError, withSocket, type NetlinkTarget } from './socket.js';

/** Options of {@link addAddress}. */
export interface AddAddressOptions {
  /** Skip IPv6 duplicate address detection, so the address is usable at once. */
  nodad?: boolean;
  /** Address scope (default `universe`, i.e. global). */
  scope?: Scope;
  /** Replace an existing equal address instead of failing with `EEXIST`. */
  replace?: boolean;
}

/** An address as the kernel reports it. */
export interface AddressInfo {
  ifindex: number;
  family: IpFamily;
  /** The address itself, e.g. `10.199.0.1`. */
  address: string;
  prefixLen: number;
  /** `address/prefixLen`. */
  cidr: string;
  scope: Scope | number;
  /** All `IFA_F_*` flags (e.g. `IFA_F_NODAD` 0x02, `IFA_F_PERMANENT` 0x80). */
  flags: number;
  /** IPv4 label (`eth0:1`), if any. */
  label?: string;
}

function addrBody(ifindex: number, cidr: string, flags: number, scope: number): Buffer {
  const c = parseCidr(cidr);
  const attrs: NlAttr[] = [attrBytes(IFA_LOCAL, c.bytes), attrBytes(IFA_ADDRESS, c.bytes)];
  if (flags !== 0) attrs.push(attrU32(IFA_FLAGS, flags));
  return Buffer.concat([
    encodeIfaddrmsg({ family: afOf(c.family), prefixLen: c.prefixLen, flags, scope, index: ifindex }),
    encodeAttrs(attrs),
  ]);
}

/**
 * Adds `cidr` (`10.199.0.1/24`, `fd99::1/64`; no prefix means a host address)
 * to device `ifindex`. Throws {@link NetlinkError} `EEXIST` if it is there
 * already (unless `replace`).
 */
export function addAddress(ifindex: number, cidr: string, opts: AddAddressOptions = {}, target?: NetlinkTarget): void {
  const body = addrBody(ifindex, cidr, opts.nodad ? IFA_F_NODAD : 0, scopeNumber(opts.scope ?? 'universe'));
  const flags = NLM_F_CREATE | (opts.replace ? NLM_F_REPLACE : NLM_F_EXCL);
  withSocket(target, (s) => {
    s.request(RTM_NEWADDR, flags, body, () => `add address ${cidr} to ${describeLink(s, ifindex)}`);
  });
}

/**
 * Removes `cidr` from device `ifindex`. Returns false when the device has no
 * such address, true when it was removed.
 */
export function deleteAddress(ifindex: number, cidr: string, target?: NetlinkTarget): boolean {
  const body = addrBody(ifindex, cidr, 0, 0);
  return withSocket(target, (s) => {
    try {
      s.request(RTM_DELADDR, 0, body, () => `delete address ${cidr} from ${describeLink(s, ifindex)}`);
      return true;
    } catch (err) {
      if (isNetlinkError(err, 'EADDRNOTAVAIL')) return false;
      throw err;
    }
  });
}

/** Decodes an `RTM_NEWADDR` body; undefined for families other than IPv4/IPv6. */
export function decodeAddress(body: Buffer): AddressInfo | undefined {
  const hdr = decodeIfaddrmsg(body);
  const family = familyOfAf(hdr.family);
  if (family === undefined) return undefined;
  const attrs = parseAttrs(body, 8);
  // IPv4: IFA_LOCAL is the address, IFA_ADDRESS the peer (equal without one). IPv6: IFA_ADDRESS.
  const raw = attrs.get(IFA_LOCAL) ?? attrs.get(IFA_ADDRESS);
  if (raw === undefined) return undefined;
  const address = formatIp(raw);
  const info: AddressInfo = {
    ifindex: hdr.index,
    family,
    address,
    prefixLen: hdr.prefixLen,
    cidr: `${address}/${hdr.prefixLen}`,
    scope: scopeName(hdr.scope),
    flags: decodeU32(attrs.get(IFA_FLAGS)) ?? hdr.flags,
  };
  const label = attrs.get(IFA_LABEL);
  if (label !== undefined) info.label = decodeString(label);
  return info;
}

/** Options of {@link listAddresses}. */
export interface ListAddressOptions {
  /** Only this family (default both). */
  family?: IpFamily;
}

/** The addresses of device `ifindex`, or of every device when it is undefined. */
export function listAddresses(ifindex?: number, opts: ListAddressOptions = {}, target?: NetlinkTarget): AddressInfo[] {
  const body = encodeIfaddrmsg({ family: opts.family === undefined ? AF_UNSPEC : afOf(opts.family) });
  return withSocket(target, (s) => s.dump(RTM_GETADDR, body, 'list addresses'))
    .map(decodeAddress)
    .filter((a): a is AddressInfo => a !== undefined && (ifindex === undefined || a.ifindex === ifindex));
}
