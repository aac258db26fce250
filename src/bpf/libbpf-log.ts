/**
 * libbpf's own messages. libbpf prints warnings to stderr by default; the
 * library routes them here instead: the last messages are kept for error
 * reports, and WAGGLE_LIBBPF_DEBUG=1 echoes them to stderr.
 */
import { formatVaList, registerPrint } from './sys.js';

const recent: string[] = [];
const KEEP = 64;
let installed = false;

/** Installs the capturing print callback once per process. */
export function captureLibbpfLog(): void {
  if (installed) return;
  installed = true;
  registerPrint((level, fmt, args) => {
    const msg = formatVaList(fmt, args).trimEnd();
    recent.push(msg);
    if (recent.length > KEEP) recent.shift();
    if (process.env.WAGGLE_LIBBPF_DEBUG === '1' || (level === 0 && process.env.WAGGLE_LIBBPF_DEBUG === 'warn')) {
      process.stderr.write(`${msg}\n`);
    }
    return 0;
  });
}

/** Marks the current end of the log; pass it to {@link libbpfLogSince}. */
export function libbpfLogMark(): number {
  return recent.length;
}

/** Messages logged since `mark` (best effort: at most the last 64 are kept). */
export function libbpfLogSince(mark: number): string[] {
  return recent.slice(Math.min(mark, recent.length));
}

/** Clears the kept messages. */
export function resetLibbpfLog(): void {
  recent.length = 0;
}
