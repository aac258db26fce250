/**
 * BTF reading through libbpf: struct layouts and data-section variables of a
 * compiled object, so TypeScript codecs can be checked against the C structs
 * and `.rodata` constants can be listed. Needs no privileges.
 */
import { cString, isNull, libbpfCalls, viewOf, type Pointer } from './sys.js';
import { BpfError, BpfUsageError } from './errors.js';

/** BTF kinds (linux/btf.h). */
export enum BtfKind {
  Unknown = 0, Int = 1, Ptr = 2, Array = 3, Struct = 4, Union = 5, Enum = 6, Fwd = 7,
  Typedef = 8, Volatile = 9, Const = 10, Restrict = 11, Func = 12, FuncProto = 13, Var = 14,
  Datasec = 15, Float = 16, DeclTag = 17, TypeTag = 18, Enum64 = 19,
}

/** One decoded BTF type record (the fields the library uses). */
export interface BtfType {
  id: number;
  kind: BtfKind;
  name: string;
  /** `size` for sized kinds, the referenced type id for the others. */
  sizeOrType: number;
  vlen: number;
  kindFlag: boolean;
}

/** One member of a struct or union. */
export interface BtfMember {
  name: string;
  typeId: number;
  /** Offset in bits from the start of the struct. */
  bitOffset: number;
  /** Bitfield size in bits, 0 for a plain member. */
  bitfieldSize: number;
  /** Size in bytes of the member's type. */
  size: number;
  /** Readable type name (`__u32`, `struct foo`, `__u8[32]`). */
  typeName: string;
}

/** A struct's layout as BTF describes it. */
export interface StructLayout {
  name: string;
  size: number;
  members: BtfMember[];
}

/** One variable of a data section (`.rodata`, `.data`, `.bss`). */
export interface DatasecVar {
  name: string;
  offset: number;
  size: number;
  typeName: string;
}

const sized = new Set([BtfKind.Int, BtfKind.Struct, BtfKind.Union, BtfKind.Enum, BtfKind.Datasec, BtfKind.Float, BtfKind.Enum64]);
const modifiers = new Set([BtfKind.Typedef, BtfKind.Volatile, BtfKind.Const, BtfKind.Restrict, BtfKind.TypeTag]);

/** BTF of one object, read with libbpf. Free it with {@link Btf.close} when you own it. */
export class Btf {
  private handle: Pointer;
  private readonly owned: boolean;

  private constructor(handle: Pointer, owned: boolean) {
    this.handle = handle;
    this.owned = owned;
  }

  /** Parses the BTF of an ELF object file (`.BTF` section). */
  static fromFile(path: string): Btf {
    const h = libbpfCalls.btfParse(path, null);
    if (isNull(h)) throw new BpfError('BPF_ERR_BTF', `no BTF in ${path}: build it with clang -g`);
    return new Btf(h, true);
  }

  /** Wraps BTF owned by a libbpf object (not freed by close). */
  static borrowed(handle: Pointer): Btf {
    return new Btf(handle, false);
  }

  /** Number of type ids (id 0 is void). */
  get typeCount(): number {
    return libbpfCalls.btfTypeCount(this.handle) as number;
  }

  private raw(id: number, extra: number): DataView {
    const p = libbpfCalls.btfTypeById(this.handle, id);
    if (isNull(p)) throw new BpfUsageError(`BTF has no type ${id}`);
    return new DataView(viewOf(p, 12 + extra));
  }

  private str(off: number): string {
    return cString(libbpfCalls.btfNameByOffset(this.handle, off));
  }

  /** The type record with id `id`. */
  type(id: number): BtfType {
    if (id === 0) return { id: 0, kind: BtfKind.Unknown, name: 'void', sizeOrType: 0, vlen: 0, kindFlag: false };
    const v = this.raw(id, 0);
    const info = v.getUint32(4, true);
    return {
      id,
      kind: (info >>> 24) & 0x1f,
      name: this.str(v.getUint32(0, true)),
      sizeOrType: v.getUint32(8, true),
      vlen: info & 0xffff,
      kindFlag: (info >>> 31) === 1,
    };
  }

  /** The first type of `kind` named `name`, or undefined. */
  find(name: string, kind: BtfKind): BtfType | undefined {
    const n = this.typeCount;
    for (let id = 1; id < n; id++) {
      const t = this.type(id);
      if (t.kind === kind && t.name === name) return t;
    }
    return undefined;
  }

  /** Size in bytes of type `id`, following typedefs and modifiers. */
  sizeOf(id: number): number {
    const t = this.type(id);
    if (sized.has(t.kind)) return t.sizeOrType;
    if (t.kind === BtfKind.Ptr) return 8;
    if (t.kind === BtfKind.Array) {
      const a = this.raw(id, 12);
      return this.sizeOf(a.getUint32(12, true)) * a.getUint32(20, true);
    }
    if (modifiers.has(t.kind) || t.kind === BtfKind.Var) return this.sizeOf(t.sizeOrType);
    throw new BpfUsageError(`BTF type ${id} (${BtfKind[t.kind]}) has no size`);
  }

  /** Readable name of type `id`. */
  typeName(id: number): string {
    const t = this.type(id);
    switch (t.kind) {
      case BtfKind.Struct: return `struct ${t.name}`;
      case BtfKind.Union: return `union ${t.name}`;
      case BtfKind.Enum: case BtfKind.Enum64: return `enum ${t.name}`;
      case BtfKind.Ptr: return `${this.typeName(t.sizeOrType)} *`;
      case BtfKind.Array: {
        const a = this.raw(id, 12);
        return `${this.typeName(a.getUint32(12, true))}[${a.getUint32(20, true)}]`;
      }
      case BtfKind.Const: return `const ${this.typeName(t.sizeOrType)}`;
      case BtfKind.Volatile: return `volatile ${this.typeName(t.sizeOrType)}`;
      default: return t.name || BtfKind[t.kind] || 'unknown';
    }
  }

  /** Layout of `struct name`; throws when the object has no such struct. */
  struct(name: string): StructLayout {
    const t = this.find(name, BtfKind.Struct);
    if (!t) throw new BpfUsageError(`BTF has no struct ${name}`);
    const v = this.raw(t.id, 12 * t.vlen);
    const members: BtfMember[] = [];
    for (let i = 0; i < t.vlen; i++) {
      const base = 12 + 12 * i;
      const typeId = v.getUint32(base + 4, true);
      const off = v.getUint32(base + 8, true);
      members.push({
        name: this.str(v.getUint32(base, true)),
        typeId,
        bitOffset: t.kindFlag ? off & 0xffffff : off,
        bitfieldSize: t.kindFlag ? off >>> 24 : 0,
        size: this.sizeOf(typeId),
        typeName: this.typeName(typeId),
      });
    }
    return { name, size: t.sizeOrType, members };
  }

  /** Variables of the data section `name` (`.rodata`, …); empty when absent. */
  datasec(name: string): DatasecVar[] {
    const t = this.find(name, BtfKind.Datasec);
    if (!t) return [];
    const v = this.raw(t.id, 12 * t.vlen);
    const out: DatasecVar[] = [];
    for (let i = 0; i < t.vlen; i++) {
      const base = 12 + 12 * i;
      const varType = this.type(v.getUint32(base, true));
      out.push({
        name: varType.name,
        offset: v.getUint32(base + 4, true),
        size: v.getUint32(base + 8, true),
        typeName: this.typeName(varType.sizeOrType).replace(/^(const |volatile )+/, ''),
      });
    }
    return out;
  }

  /** Frees BTF this object owns. */
  close(): void {
    if (this.owned && !isNull(this.handle)) libbpfCalls.btfFree(this.handle);
    this.handle = null;
  }
}
