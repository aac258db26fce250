/**
 * 16-bit port prefixes, as the datapath policy map keys ports: `port/prefixLen`
 * covers every port whose top `prefixLen` bits equal those of `port`.
 */

export interface PortPrefix {
  port: number;
  prefixLen: number;
}

/** The mask of a port prefix length (0..16). */
export function portMask(prefixLen: number): number {
  return prefixLen <= 0 ? 0 : (0xffff << (16 - Math.min(prefixLen, 16))) & 0xffff;
}

function checkPort(p: number, what: string): void {
  if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new RangeError(`${what} port ${p} is not an integer in 0..65535`);
}

/**
 * The minimal set of prefixes covering exactly [first, last] (like CIDR
 * aggregation), in ascending port order. 80..80 → [80/16]; 0..65535 → [0/0];
 * 1..65535 → 16 prefixes. Throws a RangeError for ports out of range or
 * first > last.
 */
export function portRangeToPrefixes(first: number, last: number): PortPrefix[] {
  checkPort(first, 'first');
  checkPort(last, 'last');
  if (first > last) throw new RangeError(`port range ${first}-${last} is empty (first > last)`);
  const out: PortPrefix[] = [];
  let start = first;
  while (start <= last) {
    // Largest aligned block starting at `start` that stays within `last`.
    let bits = 16;
    while (bits > 0) {
      const size = 2 ** bits;
      if (start % size === 0 && start + size - 1 <= last) break;
      bits--;
    }
    out.push({ port: start, prefixLen: 16 - bits });
    start += 2 ** bits;
  }
  return out;
}

/** Does prefix a (aPort/aLen) contain prefix b (bPort/bLen)? Equal prefixes contain each other. */
export function prefixContains(aPort: number, aLen: number, bPort: number, bLen: number): boolean {
  if (aLen > bLen) return false;
  const m = portMask(aLen);
  return ((aPort ^ bPort) & m) === 0;
}

/** Is `port` inside the prefix `prefixPort/prefixLen`? */
export function portInPrefix(port: number, prefixPort: number, prefixLen: number): boolean {
  return prefixContains(prefixPort, prefixLen, port, 16);
}

/** The first and last port of a prefix. */
export function prefixRange(port: number, prefixLen: number): { first: number; last: number } {
  const m = portMask(prefixLen);
  const first = port & m;
  return { first, last: first | (~m & 0xffff) };
}
