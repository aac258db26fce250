/**
 * Guards for tests that need root or external tools.
 *
 * Locally such a test is skipped with a reason; with `CI=true` it fails instead,
 * because a skipped root test in CI would hide that nothing was tested.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { TestContext } from 'node:test';

/** True when the process runs as uid 0. */
export const isRoot: boolean = process.getuid?.() === 0;

/** True when `CI=true` is set: guards then fail instead of skipping. */
export const isCI: boolean = process.env.CI === 'true';

function skipOrFail(t: TestContext, reason: string): true {
  if (isCI) throw new Error(`${reason} and CI=true: a skipped test is a failure`);
  t.skip(reason);
  return true;
}

/**
 * Skips `t` unless running as root. Returns true when the test was skipped (the
 * caller should return at once); throws instead when `CI=true`.
 *
 * @example
 * test('attach', (t) => { if (skipUnlessRoot(t)) return; ... });
 */
export function skipUnlessRoot(t: TestContext): boolean {
  if (isRoot) return false;
  if (isCI) throw new Error('this test needs root and CI=true: a skipped root test is a failure');
  t.skip('needs root');
  return true;
}

/** The names among `names` that are not executable files on PATH. */
export function missingTools(...names: string[]): string[] {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter((d) => d !== '');
  return names.filter((name) => !dirs.some((dir) => {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  }));
}

/**
 * Skips `t` unless every named binary is on PATH. Returns true when the test was
 * skipped (the caller should return at once); throws instead when `CI=true`.
 * The missing tools are named in the reason.
 */
export function requireTools(t: TestContext, ...names: string[]): boolean {
  const missing = missingTools(...names);
  if (missing.length === 0) return false;
  return skipOrFail(t, `needs tools missing from PATH: ${missing.join(', ')}`);
}
