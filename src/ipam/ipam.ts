/**
 * Host-scope IP address management: one pool per configured pod CIDR. The
 * first usable address of each pool is the node's router address (the
 * endpoints' gateway); IPv4 pools also keep the network and broadcast
 * addresses. Allocation is deterministic (lowest free address after the last
 * one handed out, wrapping), never hands out an address twice, and its state is
 * plain data the agent persists.
 */
import { cidrContains, cidrSize, formatAddress, parseAddress, parseCidr, type Cidr, type Family } from './cidr.js';

/** Addresses in use, by owner, as persisted. */
export interface IpamState {
  /** address text → owner (an endpoint name) */
  allocations: Record<string, string>;
}

export class IpamError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'IpamError';
    this.code = code;
  }
}

/** Most addresses scanned per allocation in a huge (IPv6) pool before giving up. */
const MAX_SCAN = 1n << 20n;

class Pool {
  readonly cidr: Cidr;
  readonly router: bigint;
  private readonly first: bigint;
  private readonly last: bigint;
  private readonly used = new Map<bigint, string>();
  private cursor: bigint;

  constructor(cidr: Cidr) {
    this.cidr = cidr;
    const size = cidrSize(cidr);
    const minSize = cidr.family === 4 ? 4n : 2n;
    if (size < minSize) throw new IpamError('IPAM_POOL_TOO_SMALL', `pod CIDR ${cidr.text} is too small: it needs room for the router address and at least one endpoint`);
    this.router = cidr.base + 1n;
    this.first = cidr.base + 2n;
    this.last = cidr.base + size - (cidr.family === 4 ? 2n : 1n);
    this.cursor = this.first;
  }

  get capacity(): bigint {
    return this.last - this.first + 1n;
  }

  get inUse(): number {
    return this.used.size;
  }

  has(value: bigint): boolean {
    return this.used.has(value);
  }

  owner(value: bigint): string | undefined {
    return this.used.get(value);
  }

  inRange(value: bigint): boolean {
    return value >= this.first && value <= this.last;
  }

  take(value: bigint, owner: string): void {
    this.used.set(value, owner);
  }

  release(value: bigint): boolean {
    return this.used.delete(value);
  }

  entries(): IterableIterator<[bigint, string]> {
    return this.used.entries();
  }

  allocate(owner: string): bigint {
    if (BigInt(this.used.size) >= this.capacity) {
      throw new IpamError('IPAM_EXHAUSTED', `pod CIDR ${this.cidr.text} is exhausted: all ${this.capacity} endpoint addresses are in use`);
    }
    let v = this.cursor;
    for (let scanned = 0n; scanned < MAX_SCAN; scanned++) {
      if (v > this.last) v = this.first;
      if (!this.used.has(v)) {
        this.used.set(v, owner);
        this.cursor = v + 1n;
        return v;
      }
      v++;
    }
    throw new IpamError('IPAM_EXHAUSTED', `no free address found in ${this.cidr.text} after scanning ${MAX_SCAN} addresses`);
  }
}

/** The node's address pools: at most one IPv4 and one IPv6. */
export class Ipam {
  private readonly pools = new Map<Family, Pool>();

  constructor(cidrs: readonly string[]) {
    if (cidrs.length === 0) throw new IpamError('IPAM_NO_POOL', 'no pod CIDR configured: give one IPv4 and/or one IPv6 CIDR');
    for (const text of cidrs) {
      const cidr = parseCidr(text);
      if (this.pools.has(cidr.family)) throw new IpamError('IPAM_DUPLICATE_FAMILY', `more than one IPv${cidr.family} pod CIDR (${this.pools.get(cidr.family)?.cidr.text}, ${cidr.text}): give one per family`);
      this.pools.set(cidr.family, new Pool(cidr));
    }
  }

  /** The families with a pool. */
  get families(): Family[] {
    return [...this.pools.keys()].sort();
  }

  /** The pool CIDR of `family`. */
  cidr(family: Family): Cidr | undefined {
    return this.pools.get(family)?.cidr;
  }

  /** The router (gateway) address of `family`'s pool. */
  routerAddress(family: Family): string | undefined {
    const p = this.pools.get(family);
    return p ? formatAddress(family, p.router) : undefined;
  }

  /**
   * Allocates one address per family for `owner`. All or nothing: when one
   * family is exhausted, the other's address is given back.
   */
  allocate(owner: string): Partial<Record<Family, string>> {
    const out: Partial<Record<Family, string>> = {};
    const taken: [Pool, bigint][] = [];
    try {
      for (const [family, pool] of [...this.pools.entries()].sort(([a], [b]) => a - b)) {
        const v = pool.allocate(owner);
        taken.push([pool, v]);
        out[family] = formatAddress(family, v);
      }
      return out;
    } catch (err) {
      for (const [pool, v] of taken) pool.release(v);
      throw err;
    }
  }

  /** Marks a specific address as used by `owner` (restoring state); throws if taken or outside the pools. */
  claim(address: string, owner: string): void {
    const { family, value } = parseAddress(address);
    const pool = this.pools.get(family);
    if (!pool || !cidrContains(pool.cidr, family, value) || !pool.inRange(value)) {
      throw new IpamError('IPAM_OUT_OF_RANGE', `${address} is not an endpoint address of the pod CIDRs (${[...this.pools.values()].map((p) => p.cidr.text).join(', ')})`);
    }
    const current = pool.owner(value);
    if (current !== undefined && current !== owner) throw new IpamError('IPAM_IN_USE', `${address} is already allocated to ${current}`);
    pool.take(value, owner);
  }

  /** Gives `address` back; returns false when it was not allocated. */
  release(address: string): boolean {
    const { family, value } = parseAddress(address);
    return this.pools.get(family)?.release(value) ?? false;
  }

  /** Usage per family, for status and metrics. */
  usage(): { family: Family; cidr: string; used: number; capacity: bigint }[] {
    return this.families.map((f) => {
      const p = this.pools.get(f) as Pool;
      return { family: f, cidr: p.cidr.text, used: p.inUse, capacity: p.capacity };
    });
  }

  /** Current allocations as plain data. */
  state(): IpamState {
    const allocations: Record<string, string> = {};
    for (const [family, pool] of this.pools) {
      for (const [v, owner] of pool.entries()) allocations[formatAddress(family, v)] = owner;
    }
    return { allocations };
  }
}
