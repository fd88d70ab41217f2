/**
 * A minimal protobuf wire-format codec, enough to read, edit and write ONNX files without a
 * protobuf runtime.
 *
 * A message is kept as the ordered list of its fields exactly as they appear on the wire, so
 * decode → encode reproduces the input byte for byte (for canonically encoded input, which is
 * what every protobuf library writes), unknown fields included. Length-delimited fields whose
 * number the schema marks as a sub-message are decoded recursively; every other
 * length-delimited field (strings, bytes, packed scalars) stays a `Uint8Array` view of the
 * input — large tensors are never copied.
 *
 * Wire format: https://protobuf.dev/programming-guides/encoding/
 */

export enum WireType {
  Varint = 0,
  Fixed64 = 1,
  LengthDelimited = 2,
  Fixed32 = 5,
}

/** One field occurrence. Varints are unsigned 64-bit bigints (int64 −1 is 2^64 − 1). */
export type PbField =
  | { no: number; wt: WireType.Varint; value: bigint }
  | { no: number; wt: WireType.Fixed64; value: Uint8Array }
  | { no: number; wt: WireType.Fixed32; value: Uint8Array }
  | { no: number; wt: WireType.LengthDelimited; value: Uint8Array | PbMessage };

/** Which field numbers of a message type hold sub-messages, and their schemas. */
export interface MessageSchema {
  readonly name: string;
  readonly messages: Readonly<Record<number, () => MessageSchema>>;
}

/** Malformed protobuf input. The ONNX layer turns it into a ModelFileError naming the file. */
export class ProtobufDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtobufDecodeError";
  }
}

const textDecoder = new TextDecoder("utf-8", { fatal: false });
const textEncoder = new TextEncoder();

export class PbMessage {
  constructor(
    public fields: PbField[] = [],
    public readonly schema?: MessageSchema,
  ) {}

  /** The last occurrence of field `no` (protobuf's "last one wins" for singular fields). */
  get(no: number): PbField | undefined {
    return this.fields.findLast((f) => f.no === no);
  }

  all(no: number): PbField[] {
    return this.fields.filter((f) => f.no === no);
  }

  has(no: number): boolean {
    return this.fields.some((f) => f.no === no);
  }

  bytes(no: number): Uint8Array | undefined {
    const f = this.get(no);
    if (f === undefined) return undefined;
    if (f.wt !== WireType.LengthDelimited) throw wrongType(this, no, f.wt, "bytes");
    return f.value instanceof PbMessage ? encodeMessage(f.value) : f.value;
  }

  string(no: number): string | undefined {
    const b = this.bytes(no);
    return b === undefined ? undefined : textDecoder.decode(b);
  }

  strings(no: number): string[] {
    return this.all(no).map((f) => {
      if (f.wt !== WireType.LengthDelimited || f.value instanceof PbMessage) throw wrongType(this, no, f.wt, "string");
      return textDecoder.decode(f.value);
    });
  }

  /** A varint field as a signed 64-bit integer (int64/int32/enum), as a JS number. */
  int(no: number): number | undefined {
    const f = this.get(no);
    if (f === undefined) return undefined;
    if (f.wt !== WireType.Varint) throw wrongType(this, no, f.wt, "varint");
    return Number(BigInt.asIntN(64, f.value));
  }

  /** A repeated int64/int32 field, packed or not (readers must accept both encodings). */
  ints(no: number): number[] {
    const out: number[] = [];
    for (const f of this.all(no)) {
      if (f.wt === WireType.Varint) out.push(Number(BigInt.asIntN(64, f.value)));
      else if (f.wt === WireType.LengthDelimited && !(f.value instanceof PbMessage)) {
        const r = new Reader(f.value);
        while (!r.done()) out.push(Number(BigInt.asIntN(64, r.varint())));
      } else throw wrongType(this, no, f.wt, "repeated varint");
    }
    return out;
  }

  /** A float (fixed32) field. */
  float(no: number): number | undefined {
    const f = this.get(no);
    if (f === undefined) return undefined;
    if (f.wt !== WireType.Fixed32) throw wrongType(this, no, f.wt, "fixed32");
    return new DataView(f.value.buffer, f.value.byteOffset, 4).getFloat32(0, true);
  }

  /** A repeated float field, packed or not. */
  floats(no: number): Float32Array {
    const chunks: number[] = [];
    for (const f of this.all(no)) {
      if (f.wt === WireType.Fixed32) chunks.push(new DataView(f.value.buffer, f.value.byteOffset, 4).getFloat32(0, true));
      else if (f.wt === WireType.LengthDelimited && !(f.value instanceof PbMessage)) {
        if (f.value.length % 4 !== 0) throw new ProtobufDecodeError(`packed float field ${no} has ${f.value.length} bytes`);
        const dv = new DataView(f.value.buffer, f.value.byteOffset, f.value.length);
        for (let i = 0; i < f.value.length; i += 4) chunks.push(dv.getFloat32(i, true));
      } else throw wrongType(this, no, f.wt, "repeated float");
    }
    return Float32Array.from(chunks);
  }

  message(no: number): PbMessage | undefined {
    const f = this.get(no);
    if (f === undefined) return undefined;
    if (f.wt !== WireType.LengthDelimited || !(f.value instanceof PbMessage)) throw wrongType(this, no, f.wt, "message");
    return f.value;
  }

  messages(no: number): PbMessage[] {
    return this.all(no).map((f) => {
      if (f.wt !== WireType.LengthDelimited || !(f.value instanceof PbMessage)) throw wrongType(this, no, f.wt, "message");
      return f.value;
    });
  }

  /** Replaces every occurrence of field `no` by `replacement` (at the position of the first
   *  occurrence, or appended), keeping the order of the other fields. */
  replace(no: number, replacement: PbField[]): void {
    const at = this.fields.findIndex((f) => f.no === no);
    const rest = this.fields.filter((f) => f.no !== no);
    if (at < 0) {
      this.fields = [...rest, ...replacement];
      return;
    }
    const before = this.fields.slice(0, at).filter((f) => f.no !== no).length;
    this.fields = [...rest.slice(0, before), ...replacement, ...rest.slice(before)];
  }

  remove(no: number): void {
    this.fields = this.fields.filter((f) => f.no !== no);
  }

  setString(no: number, value: string): void {
    this.replace(no, [stringField(no, value)]);
  }

  setInt(no: number, value: number | bigint): void {
    this.replace(no, [intField(no, value)]);
  }

  setBytes(no: number, value: Uint8Array): void {
    this.replace(no, [{ no, wt: WireType.LengthDelimited, value }]);
  }

  setMessage(no: number, value: PbMessage): void {
    this.replace(no, [{ no, wt: WireType.LengthDelimited, value }]);
  }

  setMessages(no: number, values: PbMessage[]): void {
    this.replace(
      no,
      values.map((value) => ({ no, wt: WireType.LengthDelimited, value })),
    );
  }

  setStrings(no: number, values: string[]): void {
    this.replace(
      no,
      values.map((v) => stringField(no, v)),
    );
  }
}

function wrongType(msg: PbMessage, no: number, wt: WireType, wanted: string): ProtobufDecodeError {
  return new ProtobufDecodeError(`${msg.schema?.name ?? "message"} field ${no} has wire type ${wt}, expected ${wanted}`);
}

export function stringField(no: number, value: string): PbField {
  return { no, wt: WireType.LengthDelimited, value: textEncoder.encode(value) };
}

export function intField(no: number, value: number | bigint): PbField {
  const v = typeof value === "bigint" ? value : BigInt(value);
  return { no, wt: WireType.Varint, value: BigInt.asUintN(64, v) };
}

export function floatField(no: number, value: number): PbField {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, value, true);
  return { no, wt: WireType.Fixed32, value: b };
}

/** A packed repeated int64 field (one length-delimited field holding all varints). */
export function packedIntsField(no: number, values: readonly number[]): PbField {
  const w = new Writer(values.length * 2 + 8);
  for (const v of values) w.varint(BigInt.asUintN(64, BigInt(v)));
  return { no, wt: WireType.LengthDelimited, value: w.finish() };
}

// ---------------------------------------------------------------------------------------------
// Decoding

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      const b = this.buf[this.pos];
      if (b === undefined) throw new ProtobufDecodeError(`truncated varint at byte ${this.pos}`);
      this.pos++;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return BigInt.asUintN(64, result);
      shift += 7n;
    }
    throw new ProtobufDecodeError(`varint longer than 10 bytes at byte ${this.pos}`);
  }

  /** A varint known to be small (tags and lengths): avoids bigint on the hot path. */
  smallVarint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.buf[this.pos];
      if (b === undefined) throw new ProtobufDecodeError(`truncated varint at byte ${this.pos}`);
      this.pos++;
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 128;
    }
    throw new ProtobufDecodeError(`length or tag varint too large at byte ${this.pos}`);
  }

  take(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.buf.length) {
      throw new ProtobufDecodeError(`field of ${n} bytes at byte ${this.pos} runs past the end (${this.buf.length} bytes)`);
    }
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

/** Decodes `buf` as a message of `schema`. Bytes are views into `buf` (not copies). */
export function decodeMessage(buf: Uint8Array, schema?: MessageSchema): PbMessage {
  const r = new Reader(buf);
  const fields: PbField[] = [];
  while (!r.done()) {
    const tag = r.smallVarint();
    const no = Math.floor(tag / 8);
    const wt = tag & 7;
    if (no === 0) throw new ProtobufDecodeError(`field number 0 at byte ${r.pos}`);
    switch (wt) {
      case WireType.Varint:
        fields.push({ no, wt, value: r.varint() });
        break;
      case WireType.Fixed64:
        fields.push({ no, wt, value: r.take(8) });
        break;
      case WireType.Fixed32:
        fields.push({ no, wt, value: r.take(4) });
        break;
      case WireType.LengthDelimited: {
        const bytes = r.take(r.smallVarint());
        const sub = schema?.messages[no];
        fields.push({ no, wt, value: sub ? decodeMessage(bytes, sub()) : bytes });
        break;
      }
      default:
        throw new ProtobufDecodeError(`unsupported wire type ${wt} (field ${no}) at byte ${r.pos}`);
    }
  }
  return new PbMessage(fields, schema);
}

// ---------------------------------------------------------------------------------------------
// Encoding

class Writer {
  buf: Uint8Array;
  pos = 0;
  constructor(size: number) {
    this.buf = new Uint8Array(Math.max(16, size));
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }
  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }
  varint(v: bigint): void {
    this.ensure(10);
    let x = v;
    while (x >= 0x80n) {
      this.buf[this.pos++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.pos++] = Number(x);
  }
  smallVarint(v: number): void {
    this.ensure(10);
    let x = v;
    while (x >= 0x80) {
      this.buf[this.pos++] = (x % 128) | 0x80;
      x = Math.floor(x / 128);
    }
    this.buf[this.pos++] = x;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

function varintSize(v: bigint): number {
  let n = 1;
  let x = v;
  while (x >= 0x80n) {
    x >>= 7n;
    n++;
  }
  return n;
}

function smallVarintSize(v: number): number {
  let n = 1;
  let x = v;
  while (x >= 0x80) {
    x = Math.floor(x / 128);
    n++;
  }
  return n;
}

function messageSize(msg: PbMessage, sizes: Map<PbMessage, number>): number {
  const cached = sizes.get(msg);
  if (cached !== undefined) return cached;
  let total = 0;
  for (const f of msg.fields) {
    total += smallVarintSize(f.no * 8 + f.wt);
    switch (f.wt) {
      case WireType.Varint:
        total += varintSize(f.value);
        break;
      case WireType.Fixed64:
        total += 8;
        break;
      case WireType.Fixed32:
        total += 4;
        break;
      case WireType.LengthDelimited: {
        const len = f.value instanceof PbMessage ? messageSize(f.value, sizes) : f.value.length;
        total += smallVarintSize(len) + len;
        break;
      }
    }
  }
  sizes.set(msg, total);
  return total;
}

function writeMessage(w: Writer, msg: PbMessage, sizes: Map<PbMessage, number>): void {
  for (const f of msg.fields) {
    w.smallVarint(f.no * 8 + f.wt);
    switch (f.wt) {
      case WireType.Varint:
        w.varint(f.value);
        break;
      case WireType.Fixed64:
      case WireType.Fixed32:
        w.bytes(f.value);
        break;
      case WireType.LengthDelimited:
        if (f.value instanceof PbMessage) {
          w.smallVarint(messageSize(f.value, sizes));
          writeMessage(w, f.value, sizes);
        } else {
          w.smallVarint(f.value.length);
          w.bytes(f.value);
        }
        break;
    }
  }
}

/** Serializes a message. The result is exact-sized. */
export function encodeMessage(msg: PbMessage): Uint8Array {
  const sizes = new Map<PbMessage, number>();
  const size = messageSize(msg, sizes);
  const w = new Writer(size);
  writeMessage(w, msg, sizes);
  if (w.pos !== size) throw new Error(`protobuf encoder size mismatch: ${w.pos} != ${size}`);
  return w.finish();
}
