/** A usage error from the CLI itself (exit code 2). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Checks an `-o` value against the formats a command supports. */
export function outputFormat<T extends string>(value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`unknown output format ${value} (use ${allowed.join(' or ')})`);
  return value as T;
}
