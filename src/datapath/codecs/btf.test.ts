import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Btf } from '../../bpf/btf.js';
import { bpfObjectPath } from '../objects.js';
import { sharedStructs } from './index.js';

const includeDir = join(dirname(dirname(bpfObjectPath('x'))), '..', 'bpf', 'include');

test('every struct in bpf/include has exactly one TypeScript codec', () => {
  const declared = readdirSync(includeDir)
    .filter((f) => f.endsWith('.h'))
    .flatMap((f) => [...readFileSync(join(includeDir, f), 'utf8').matchAll(/^struct (\w+) \{/gm)].map((m) => `${f}:${m[1]}`));
  const coded = sharedStructs.map((s) => `${s.header}:${s.codec.cName}`);
  assert.ok(declared.length > 0);
  assert.deepEqual([...coded].sort(), [...new Set(coded)].sort(), 'one codec per struct');
  assert.deepEqual([...declared].sort(), [...coded].sort());
});

for (const { object, codec } of sharedStructs) {
  test(`codec of struct ${codec.cName} matches the BTF of ${object}`, () => {
    const btf = Btf.fromFile(bpfObjectPath(object));
    try {
      const layout = btf.struct(codec.cName);
      assert.equal(codec.size, layout.size, `size of struct ${codec.cName}`);
      const members = Object.entries(codec.members as Record<string, { offset: number; codec: { size: number } }>);
      // Explicit padding members (pad, pad2, _pad) need no codec member: the codec zero-fills gaps.
      const isPadding = (name: string): boolean => /^_?pad\d*$/.test(name);
      const real = layout.members.filter((m) => !isPadding(m.name));
      assert.equal(members.length, real.length, `member count of struct ${codec.cName}`);
      const toCamel = (s: string): string => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
      for (const m of real) {
        const mine = (codec.members as Record<string, { offset: number; codec: { size: number } }>)[toCamel(m.name)];
        assert.ok(mine, `codec of struct ${codec.cName} lacks member ${m.name}`);
        assert.equal(m.bitfieldSize, 0, `${m.name} is a bitfield`);
        assert.equal(mine.offset, m.bitOffset / 8, `offset of ${codec.cName}.${m.name}`);
        assert.equal(mine.codec.size, m.size, `size of ${codec.cName}.${m.name} (${m.typeName})`);
      }
    } finally {
      btf.close();
    }
  });
}
