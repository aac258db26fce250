/**
 * ClusterIP allocation from the agent's service CIDRs (`--service-cidr`): the
 * lowest free address of the family's range, never the network address (nor
 * the IPv4 broadcast address). Which addresses are taken is the caller's state
 * (the stored services), so allocation survives restarts with them.
 */
import { cidrContains, cidrSize, formatAddress, parseAddress, parseCidr, type Cidr, type Family } from '../ipam/cidr.js';

export class ClusterIpPool {
  private readonly ranges: Cidr[];

  constructor(cidrs: readonly string[]) {
    this.ranges = cidrs.map(parseCidr);
  }

  /** The range of a family, if the agent has one. */
  range(family: Family): Cidr | undefined {
    return this.ranges.find((r) => r.family === family);
  }

  get families(): Family[] {
    return this.ranges.map((r) => r.family);
  }

  /** Whether `ip` lies in the service CIDR of its family. */
  contains(ip: string): boolean {
    const { family, value } = parseAddress(ip);
    const r = this.range(family);
    return r !== undefined && cidrContains(r, family, value);
  }

  /**
   * The lowest address of `family` not in `taken` (canonical text form).
   * Throws naming the range when it is full or the agent has no range of that family.
   */
  allocate(family: Family, taken: ReadonlySet<string>): string {
    const r = this.range(family);
    if (!r) throw new Error(`no IPv${family} service CIDR is configured (--service-cidr)`);
    const size = cidrSize(r);
    const last = family === 4 && size > 2n ? size - 2n : size - 1n;
    for (let i = 1n; i <= last; i++) {
      const ip = formatAddress(family, r.base + i);
      if (!taken.has(ip)) return ip;
    }
    throw new Error(`the service CIDR ${r.text} has no free address left`);
  }
}
