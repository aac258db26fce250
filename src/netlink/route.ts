/**
 * IPv4 and IPv6 routes over rtnetlink (`RTM_NEWROUTE`, `RTM_DELROUTE`,
 * `RTM_GETROUTE`), with the same defaults as `ip route`.
 */
import { BpfUsageError } from '../bpf/errors.js';
import {
  NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PREFSRC, RTA_PRIORITY, RTA_TABLE,
  RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE, RTNH_F_ONLINK, RTPROT_BOOT, RT_SCOPE_LINK, RT_SCOPE_NOWHERE,
  RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, afOf, attrBytes, attrU32, decodeRtmsg, decodeU32, encodeAttrs, encodeRtmsg,
  familyOfAf, formatIp, parseAttrs, parseCidr, parseIp, scopeName, scopeNumber, type IpFamily, type NlAttr,
  type Scope,
} from './message.js';
import { isNetlinkError, withSocket, type NetlinkTarget } from './socket.js';

/** Route types (`RTN_*`) by name. */
export type RouteType = 'unicast' | 'local' | 'broadcast' | 'anycast' | 'multicast' | 'blackhole' | 'unreachable' | 'prohibit' | 'throw';

const ROUTE_TYPES: readonly RouteType[] = ['unicast', 'local', 'broadcast', 'anycast', 'multicast', 'blackhole', 'unreachable', 'prohibit', 'throw'];

/** A route to add, replace or delete. */
export interface RouteSpec {
  /** `default`, or a prefix such as `10.199.0.0/16` (no `/LEN`: a host route). */
  dst: 'default' | string;
  /** Next hop. Without it the route is direct (scope `link` by default). */
  gateway?: string;
  /** Output device. */
  ifindex?: number;
  /** Default: `universe` with a gateway, `link` without (as `ip route`). */
  scope?: Scope | number;
  /** Use the gateway even if no connected route covers it (`onlink`). */
  onlink?: boolean;
  /** Needed only when neither `dst` nor `gateway` tells (`dst: 'default'` without a gateway). */
  family?: IpFamily;
  /** Routing table (default main, 254). */
  table?: number;
  /** Priority / metric. */
  metric?: number;
  /** Preferred source address. */
  src?: string;
  /** `RTPROT_*` origin (default boot, 3, like `ip route`). */
  protocol?: number;
  /** Route type (default `unicast`). */
  type?: RouteType;
}

/** A route as the kernel reports it. */
export interface RouteInfo {
  family: IpFamily;
  /** `default` or `ADDR/LEN`. */
  dst: string;
  gateway?: string;
  ifindex?: number;
  table: number;
  protocol: number;
  scope: Scope | number;
  type: RouteType | number;
  metric?: number;
  prefsrc?: string;
  /** `rtm_flags` (`RTNH_F_*`, `RTM_F_*`). */
  flags: number;
  onlink: boolean;
}

function routeFamily(spec: RouteSpec): IpFamily {
  const fromDst = spec.dst === 'default' ? undefined : parseCidr(spec.dst).family;
  const fromGw = spec.gateway === undefined ? undefined : parseIp(spec.gateway).family;
  const family = fromDst ?? fromGw ?? spec.family;
  if (family === undefined) throw new BpfUsageError('route to default without a gateway: give family 4 or 6');
  for (const f of [fromDst, fromGw, spec.family]) {
    if (f !== undefined && f !== family) throw new BpfUsageError(`route ${describeRoute(spec)}: mixes IPv4 and IPv6`);
  }
  return family;
}

function routeBody(spec: RouteSpec, forDelete: boolean): Buffer {
  const family = routeFamily(spec);
  const dst = spec.dst === 'default' ? undefined : parseCidr(spec.dst);
  const table = spec.table ?? RT_TABLE_MAIN;
  const typeIndex = ROUTE_TYPES.indexOf(spec.type ?? 'unicast');
  if (typeIndex < 0) throw new BpfUsageError(`unknown route type ${JSON.stringify(spec.type)}`);
  const scope = spec.scope !== undefined ? scopeNumber(spec.scope)
    : forDelete ? RT_SCOPE_NOWHERE // matches any scope
      : spec.gateway === undefined && (spec.type ?? 'unicast') === 'unicast' ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  const attrs: NlAttr[] = [];
  if (table > 255) attrs.push(attrU32(RTA_TABLE, table));
  if (dst !== undefined && dst.prefixLen > 0) attrs.push(attrBytes(RTA_DST, dst.bytes));
  if (spec.gateway !== undefined) attrs.push(attrBytes(RTA_GATEWAY, parseIp(spec.gateway).bytes));
  if (spec.ifindex !== undefined) attrs.push(attrU32(RTA_OIF, spec.ifindex));
  if (spec.metric !== undefined) attrs.push(attrU32(RTA_PRIORITY, spec.metric));
  if (spec.src !== undefined) attrs.push(attrBytes(RTA_PREFSRC, parseIp(spec.src).bytes));
  return Buffer.concat([
    encodeRtmsg({
      family: afOf(family),
      dstLen: dst?.prefixLen ?? 0,
      table: table > 255 ? 0 : table,
      protocol: forDelete ? (spec.protocol ?? 0) : (spec.protocol ?? RTPROT_BOOT),
      scope,
      type: forDelete && spec.type === undefined ? 0 : typeIndex + 1,
      flags: spec.onlink ? RTNH_F_ONLINK : 0,
    }),
    encodeAttrs(attrs),
  ]);
}

/** `default via 10.0.0.1 dev 7 onlink`, for error messages. */
export function describeRoute(spec: RouteSpec): string {
  return [
    spec.dst,
    spec.gateway !== undefined ? `via ${spec.gateway}` : '',
    spec.ifindex !== undefined ? `dev ifindex ${spec.ifindex}` : '',
    spec.table !== undefined && spec.table !== RT_TABLE_MAIN ? `table ${spec.table}` : '',
    spec.onlink ? 'onlink' : '',
  ].filter((s) => s !== '').join(' ');
}

/** Adds a route. Throws {@link NetlinkError} `EEXIST` if an equal one exists. */
export function addRoute(spec: RouteSpec, target?: NetlinkTarget): void {
  const body = routeBody(spec, false);
  withSocket(target, (s) => s.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, `add route ${describeRoute(spec)}`));
}

/** Adds a route, or replaces the one with the same destination, table and metric. */
export function replaceRoute(spec: RouteSpec, target?: NetlinkTarget): void {
  const body = routeBody(spec, false);
  withSocket(target, (s) => s.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, `replace route ${describeRoute(spec)}`));
}

/**
 * Deletes the first route matching `spec` (fields left out match anything).
 * Returns false when no route matches, true when one was deleted.
 */
export function deleteRoute(spec: RouteSpec, target?: NetlinkTarget): boolean {
  const body = routeBody(spec, true);
  return withSocket(target, (s) => {
    try {
      s.request(RTM_DELROUTE, 0, body, `delete route ${describeRoute(spec)}`);
      return true;
    } catch (err) {
      if (isNetlinkError(err, 'ESRCH', 'ENOENT')) return false;
      throw err;
    }
  });
}

/** Decodes an `RTM_NEWROUTE` body; undefined for families other than IPv4/IPv6. */
export function decodeRoute(body: Buffer): RouteInfo | undefined {
  const hdr = decodeRtmsg(body);
  const family = familyOfAf(hdr.family);
  if (family === undefined) return undefined;
  const attrs = parseAttrs(body, 12);
  const dst = attrs.get(RTA_DST);
  const route: RouteInfo = {
    family,
    dst: dst === undefined || hdr.dstLen === 0 ? 'default' : `${formatIp(dst)}/${hdr.dstLen}`,
    table: decodeU32(attrs.get(RTA_TABLE)) ?? hdr.table,
    protocol: hdr.protocol,
    scope: scopeName(hdr.scope),
    type: ROUTE_TYPES[hdr.type - 1] ?? hdr.type,
    flags: hdr.flags,
    onlink: (hdr.flags & RTNH_F_ONLINK) !== 0,
  };
  const gw = attrs.get(RTA_GATEWAY);
  if (gw !== undefined) route.gateway = formatIp(gw);
  const oif = decodeU32(attrs.get(RTA_OIF));
  if (oif !== undefined) route.ifindex = oif;
  const metric = decodeU32(attrs.get(RTA_PRIORITY));
  if (metric !== undefined) route.metric = metric;
  const src = attrs.get(RTA_PREFSRC);
  if (src !== undefined) route.prefsrc = formatIp(src);
  return route;
}

/** Options of {@link listRoutes}. */
export interface ListRouteOptions {
  /** Only this table (default main, 254), or `all`. */
  table?: number | 'all';
}

/** The routes of one family, by default those of the main table (as `ip route`). */
export function listRoutes(family: IpFamily, opts: ListRouteOptions = {}, target?: NetlinkTarget): RouteInfo[] {
  const table = opts.table ?? RT_TABLE_MAIN;
  const body = encodeRtmsg({ family: afOf(family) });
  return withSocket(target, (s) => s.dump(RTM_GETROUTE, body, `list IPv${family} routes`))
    .map(decodeRoute)
    .filter((r): r is RouteInfo => r !== undefined && (table === 'all' || r.table === table));
}
