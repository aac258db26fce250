/**
 * Codecs turn TypeScript values into the bytes of a C type and back. A map is
 * typed by one codec for its key and one for its value. Struct codecs carry
 * their C name, size and member offsets so a test can check them against BTF.
 */
import { BpfUsageError } from './errors.js';

/** Encodes and decodes one fixed-size C value at an offset of a Buffer. */
export interface Codec<T> {
  /** Size in bytes of the C type. */
  readonly size: number;
  encode(value: T, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset: number): T;
}

/** The TypeScript type a codec produces. */
export type CodecValue<C> = C extends Codec<infer T> ? T : never;

function checkInt(value: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new BpfUsageError(`${what} must be an integer in 0..${max}, got ${String(value)}`);
  }
}

export const u8: Codec<number> = {
  size: 1,
  encode: (v, b, o) => { checkInt(v, 0xff, 'u8'); b[o] = v; },
  decode: (b, o) => b[o] as number,
};

export const u16: Codec<number> = {
  size: 2,
  encode: (v, b, o) => { checkInt(v, 0xffff, 'u16'); b.writeUInt16LE(v, o); },
  decode: (b, o) => b.readUInt16LE(o),
};

export const u32: Codec<number> = {
  size: 4,
  encode: (v, b, o) => { checkInt(v, 0xffffffff, 'u32'); b.writeUInt32LE(v, o); },
  decode: (b, o) => b.readUInt32LE(o),
};

export const i32: Codec<number> = {
  size: 4,
  encode: (v, b, o) => b.writeInt32LE(v, o),
  decode: (b, o) => b.readInt32LE(o),
};

/** A u64 as a bigint (exact). */
export const u64: Codec<bigint> = {
  size: 8,
  encode: (v, b, o) => b.writeBigUInt64LE(v, o),
  decode: (b, o) => b.readBigUInt64LE(o),
};

/** A u64 as a number: exact up to 2^53, which counters and timestamps stay under. */
export const u64n: Codec<number> = {
  size: 8,
  encode: (v, b, o) => {
    checkInt(v, Number.MAX_SAFE_INTEGER, 'u64');
    b.writeUInt32LE(v % 0x100000000, o);
    b.writeUInt32LE(Math.floor(v / 0x100000000), o + 4);
  },
  decode: (b, o) => b.readUInt32LE(o) + b.readUInt32LE(o + 4) * 0x100000000,
};

/** A u16 stored in network byte order (ports). */
export const be16: Codec<number> = {
  size: 2,
  encode: (v, b, o) => { checkInt(v, 0xffff, 'port'); b.writeUInt16BE(v, o); },
  decode: (b, o) => b.readUInt16BE(o),
};

/** A u32 stored in network byte order. */
export const be32: Codec<number> = {
  size: 4,
  encode: (v, b, o) => { checkInt(v, 0xffffffff, 'be32'); b.writeUInt32BE(v, o); },
  decode: (b, o) => b.readUInt32BE(o),
};

/** Parses dotted-quad IPv4 into 4 bytes; throws on anything else. */
export function parseIPv4(text: string): Uint8Array {
  const parts = text.split('.');
  const out = new Uint8Array(4);
  if (parts.length !== 4) throw new BpfUsageError(`not an IPv4 address: ${JSON.stringify(text)}`);
  parts.forEach((p, i) => {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new BpfUsageError(`not an IPv4 address: ${JSON.stringify(text)}`);
    out[i] = Number(p);
  });
  return out;
}

/** An IPv4 address (4 bytes, network order) as dotted-quad text. */
export const ipv4: Codec<string> = {
  size: 4,
  encode: (v, b, o) => b.set(parseIPv4(v), o),
  decode: (b, o) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`,
};

/** Parses IPv6 text (with `::` and an optional dotted IPv4 tail) into 16 bytes. */
export function parseIPv6(text: string): Uint8Array {
  const bad = (): never => { throw new BpfUsageError(`not an IPv6 address: ${JSON.stringify(text)}`); };
  let s = text;
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const v4 = parseIPv4(dotted[2] as string);
    const hi = (((v4[0] as number) << 8) | (v4[1] as number)).toString(16);
    const lo = (((v4[2] as number) << 8) | (v4[3] as number)).toString(16);
    s = `${dotted[1] as string}${hi}:${lo}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) bad();
  const parse = (part: string): number[] =>
    part === '' ? [] : part.split(':').map((g) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : bad()));
  const head = parse(halves[0] as string);
  let groups = head;
  if (halves.length === 2) {
    const rest = parse(halves[1] as string);
    if (head.length + rest.length > 7) bad();
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  }
  if (groups.length !== 8) bad();
  const out = new Uint8Array(16);
  groups.forEach((g, i) => { out[2 * i] = g >> 8; out[2 * i + 1] = g & 0xff; });
  return out;
}

/** Formats 16 bytes as canonical IPv6 text (RFC 5952: lower case, longest zero run as ::). */
export function formatIPv6(b: Uint8Array, o = 0): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(((b[o + 2 * i] as number) << 8) | (b[o + 2 * i + 1] as number));
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** An IPv6 address (16 bytes, network order) as text. */
export const ipv6: Codec<string> = {
  size: 16,
  encode: (v, b, o) => b.set(parseIPv6(v), o),
  decode: (b, o) => formatIPv6(b, o),
};

/** A MAC address (6 bytes) as `aa:bb:cc:dd:ee:ff`. */
export const mac: Codec<string> = {
  size: 6,
  encode: (v, b, o) => {
    const parts = v.split(':');
    if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
      throw new BpfUsageError(`not a MAC address: ${JSON.stringify(v)}`);
    }
    parts.forEach((p, i) => { b[o + i] = parseInt(p, 16); });
  },
  decode: (b, o) => Array.from(b.subarray(o, o + 6), (x) => x.toString(16).padStart(2, '0')).join(':'),
};

/** Raw bytes of a fixed length (copied out on decode). */
export function bytes(size: number): Codec<Uint8Array> {
  return {
    size,
    encode: (v, b, o) => {
      if (v.length !== size) throw new BpfUsageError(`expected ${size} bytes, got ${v.length}`);
      b.set(v, o);
    },
    decode: (b, o) => Uint8Array.prototype.slice.call(b, o, o + size),
  };
}

/** A fixed-size array of one codec. */
export function array<T>(item: Codec<T>, length: number): Codec<T[]> {
  return {
    size: item.size * length,
    encode: (v, b, o) => {
      if (v.length !== length) throw new BpfUsageError(`expected an array of ${length}, got ${v.length}`);
      v.forEach((x, i) => item.encode(x, b, o + i * item.size));
    },
    decode: (b, o) => Array.from({ length }, (_, i) => item.decode(b, o + i * item.size)),
  };
}

/** One member of a {@link StructCodec}: its offset in the C struct and its codec. */
export interface StructMember<T> {
  offset: number;
  codec: Codec<T>;
}

/** A C struct: members at explicit offsets, the C struct name for the BTF check. */
export interface StructCodec<T extends object> extends Codec<T> {
  readonly cName: string;
  readonly members: { readonly [K in keyof T]: StructMember<T[K]> };
}

/**
 * Builds a codec for `struct cName` of `size` bytes. Padding is zero on encode.
 * Offsets are written out (not computed) so the BTF test checks real intent.
 */
export function struct<T extends object>(
  cName: string,
  size: number,
  members: { [K in keyof T]: StructMember<T[K]> },
): StructCodec<T> {
  const entries = Object.entries(members) as [string, StructMember<unknown>][];
  for (const [name, m] of entries) {
    if (m.offset + m.codec.size > size) {
      throw new BpfUsageError(`struct ${cName}: member ${name} ends past the struct size ${size}`);
    }
  }
  return {
    cName,
    size,
    members,
    encode(value, buf, offset) {
      buf.fill(0, offset, offset + size);
      for (const [name, m] of entries) {
        const v = (value as Record<string, unknown>)[name];
        if (v === undefined) throw new BpfUsageError(`struct ${cName}: member ${name} is missing`);
        m.codec.encode(v, buf, offset + m.offset);
      }
    },
    decode(buf, offset) {
      const out: Record<string, unknown> = {};
      for (const [name, m] of entries) out[name] = m.codec.decode(buf, offset + m.offset);
      return out as T;
    },
  };
}
