/**
 * Follows the node's own addresses, which NodePort frontends are made from:
 * an address added or removed after the agent started (a device brought up
 * later, DHCP) changes the frontends within one interval.
 *
 * Polled with one rtnetlink dump per interval rather than a multicast
 * subscription: the netlink client is synchronous (src/netlink/socket.ts),
 * a dump costs well under a millisecond, and nothing in between needs the
 * event loop.
 */

export interface AddressWatchOptions {
  /** The current address set (any order; duplicates allowed). */
  read(): readonly string[];
  /** Called with the new set when it differs from the last one seen (again next time if it throws). */
  onChange(addresses: readonly string[]): void;
  /** Called when read() or onChange() throws; the watch goes on. */
  onError(err: Error): void;
  intervalMs: number;
}

export interface AddressWatch {
  /** The last set seen (sorted, no duplicates). */
  addresses(): string[];
  /** Compares now (as a tick does); returns whether the set changed. */
  check(): boolean;
  stop(): void;
}

const canonical = (addrs: readonly string[]): string[] => [...new Set(addrs)].sort();

/** Starts watching; the set at start is the baseline (no onChange for it). */
export function watchAddresses(opts: AddressWatchOptions): AddressWatch {
  let seen = canonical(opts.read());
  const check = (): boolean => {
    try {
      const now = opts.read();
      const next = canonical(now);
      if (next.join(' ') === seen.join(' ')) return false;
      // Taken as seen only once onChange went through: a failed update is tried again next time.
      opts.onChange(now);
      seen = next;
      return true;
    } catch (err) {
      opts.onError(err as Error);
      return false;
    }
  };
  const timer = setInterval(check, opts.intervalMs);
  timer.unref();
  return { addresses: () => [...seen], check, stop: () => clearInterval(timer) };
}
