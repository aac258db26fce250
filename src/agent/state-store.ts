/**
 * Atomic JSON state files: written to a temporary file, fsync'd, renamed over
 * the old one and the directory fsync'd, so a crash leaves the old or the new
 * state, never half of one. Reads are validated: a corrupt file is an error
 * naming the file and the field, never silently replaced.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { z } from 'zod';

export class StateError extends Error {
  readonly code = 'STATE_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'StateError';
  }
}

export class StateStore<T> {
  readonly path: string;
  private readonly schema: z.ZodType<T>;
  private readonly empty: () => T;

  constructor(path: string, schema: z.ZodType<T>, empty: () => T) {
    this.path = path;
    this.schema = schema;
    this.empty = empty;
  }

  /** The stored state, or the empty state when there is no file yet. */
  load(): T {
    if (!existsSync(this.path)) return this.empty();
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(this.path, 'utf8'));
    } catch (err) {
      throw new StateError(`state file ${this.path} is not valid JSON (${(err as Error).message}); move it away to start afresh`);
    }
    const r = this.schema.safeParse(doc);
    if (!r.success) {
      const i = r.error.issues[0];
      throw new StateError(`state file ${this.path} is invalid at ${i?.path.join('.') || '(root)'}: ${i?.message ?? 'unknown problem'}`);
    }
    return r.data;
  }

  /** Replaces the stored state atomically. */
  save(value: T): void {
    const dir = dirname(this.path);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(value, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    const dfd = openSync(dir, 'r');
    try { fsyncSync(dfd); } finally { closeSync(dfd); }
  }
}
