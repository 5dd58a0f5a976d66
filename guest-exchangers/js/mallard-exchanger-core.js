// Mallard exchangers in JavaScript: streaming, stateful Arrow transforms that
// run in Mallard's WebAssembly sandbox (bundled with esbuild, built with
// componentize-js). Batches are apache-arrow RecordBatches.
//
//   import { Exchanger, exportExchanger, appendColumn, constantColumn, arrow } from 'mallard-exchanger';
//   class AddProcessed extends Exchanger {
//     static info = { name: 'add_processed', version: '1.0.0', description: '...' };
//     open(schema) { return withField(schema, new arrow.Field('processed', new arrow.Bool(), false)); }
//     push(batch) { return [appendColumn(batch, this.output, constantColumn(new arrow.Bool(), true, batch.numRows))]; }
//   }
//   export const exchange = exportExchanger(AddProcessed);
//
// The same model as the Rust and Python SDKs: `open(schema, params)` returns the
// output schema (kept as `this.output`), `push(batch)` returns output batches,
// `finish()` flushes. Throw InvalidParams, InvalidInput or Failed to refuse a
// stream; any other exception ends it as `failed` with its message and stack.

import * as arrow from 'apache-arrow';
import { RecordBatch as RecordBatchHeader } from 'apache-arrow/ipc/metadata/message';
import { VectorAssembler } from 'apache-arrow/visitor/vectorassembler';
import { VectorLoader } from 'apache-arrow/visitor/vectorloader';

export { arrow };

/** Longest error text handed to the host. */
export const MAX_ERROR_CHARS = 4096;

/** A refusal the client sees with its message (`payload` is the WIT variant). */
export class ExchangeError extends Error {
  constructor(tag, message) {
    super(message);
    this.payload = { tag, val: String(message).slice(0, MAX_ERROR_CHARS) };
  }
}
/** The parameters are missing, malformed or unknown. */
export class InvalidParams extends ExchangeError {
  constructor(message) { super('invalid-params', message); }
}
/** The input schema or a batch is not what this exchanger works on. */
export class InvalidInput extends ExchangeError {
  constructor(message) { super('invalid-input', message); }
}
/** Anything else. */
export class Failed extends ExchangeError {
  constructor(message) { super('failed', message); }
}

/** Subclass, set `static info`, override `open`, `push` and maybe `finish`. One instance serves one stream. */
export class Exchanger {
  static info = { name: 'unnamed', version: '0.0.0', description: '' };
  /**
   * True when each output batch depends only on its input batch and the params
   * (no state between batches, nothing from `finish`): the server may then run
   * one stream on several instances. Read once, after `open`.
   */
  stateless = false;
  open(schema, params) { return schema; }
  push(batch) { return [batch]; }
  finish() { return []; }
}

/** `schema` with `field` added at the end (metadata kept). */
export function withField(schema, field) {
  return new arrow.Schema([...schema.fields, field], schema.metadata);
}

/** A column (arrow Data) of `length` copies of `value` (null for all nulls). */
export function constantColumn(type, value, length) {
  if (value === null || value === undefined) {
    return arrow.makeData({ type, length, nullCount: length, nullBitmap: new Uint8Array((length + 7) >> 3) });
  }
  if (type.typeId === arrow.Type.Bool) {
    const data = new Uint8Array((length + 7) >> 3).fill(value ? 0xff : 0);
    return arrow.makeData({ type, length, nullCount: 0, data });
  }
  return arrow.vectorFromArray(new Array(length).fill(value), type).data[0];
}

/** `batch` with `column` (arrow Data or Vector) added as the last field of `schema`. */
export function appendColumn(batch, schema, column) {
  const data = column instanceof arrow.Vector ? column.data[0] : column;
  if (data.length !== batch.numRows) {
    throw new Failed(`a column of ${data.length} rows for a batch of ${batch.numRows}`);
  }
  const children = [...batch.data.children, data];
  const struct = arrow.makeData({ type: new arrow.Struct(schema.fields), length: batch.numRows, nullCount: 0, children });
  return children.every((c) => c.length === batch.numRows) ? recordBatchOf(schema, struct) : new arrow.RecordBatch(schema, struct);
}

// ---- IPC framing -------------------------------------------------------------

const EOS = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

/** The continuation marker, length, `header` and padding that start a framed
 *  message of an IPC stream; its body follows. */
function framePrefix(header) {
  const pad = (8 - (header.length % 8)) % 8;
  const out = new Uint8Array(8 + header.length + pad);
  const view = new DataView(out.buffer);
  view.setUint32(0, 0xffffffff, true);
  view.setInt32(4, header.length + pad, true);
  out.set(header, 8);
  return out;
}

/** `header` and `body` as one framed message of an IPC stream. */
export function frame(header, body) {
  return concat([framePrefix(header), body]);
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** Where slot `slot` of the root table (the `Message`) of a flatbuffer IPC
 *  header lies: a DataView over the header and the slot's position, 0 if absent. */
function messageSlot(header, slot) {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const table = view.getUint32(0, true);
  const vtable = table - view.getInt32(table, true);
  const entry = 4 + 2 * slot;
  const off = entry + 2 <= view.getUint16(vtable, true) ? view.getUint16(vtable + entry, true) : 0;
  return [view, off ? table + off : 0];
}

/** Message.bodyLength (slot 3) of a flatbuffer IPC header. */
function bodyLength(header) {
  const [view, at] = messageSlot(header, 3);
  return at ? Number(view.getBigInt64(at, true)) : 0;
}

/** The (header, body) messages of an IPC stream. */
function messages(stream) {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const out = [];
  let at = 0;
  while (at + 8 <= stream.length) {
    let length = view.getInt32(at, true);
    at += 4;
    if (length === -1) { length = view.getInt32(at, true); at += 4; }
    if (length === 0) break;
    const header = stream.slice(at, at + length);
    at += length;
    const size = bodyLength(header);
    out.push({ header, body: stream.slice(at, at + size) });
    at += size;
  }
  return out;
}

function schemaHeader(schema) {
  return messages(arrow.tableToIPC(new arrow.Table(schema), 'stream'))[0].header;
}

/** RecordBatch.length: slot 0 of the table the Message's header (slot 2) points at. */
function recordBatchLength(header) {
  const [view, at] = messageSlot(header, 2);
  if (!at) return 0;
  const table = at + view.getUint32(at, true);
  const vtable = table - view.getInt32(table, true);
  const off = 6 <= view.getUint16(vtable, true) ? view.getUint16(vtable + 4, true) : 0;
  return off ? Number(view.getBigInt64(table + off, true)) : 0;
}

const RECORD_BATCH = 3;

/** The IPC messages of `batches`, which must be real RecordBatches of `output`'s
 *  fields: anything else (an object that only looks like a batch, another schema,
 *  rows the writer would not encode) is refused, never dropped. */
function encode(batches, output, name, dictionaries, checkOnly = false) {
  if (!Array.isArray(batches)) throw new Failed(`exchanger ${JSON.stringify(name)}: push/finish returned ${typeof batches}, not an array of RecordBatches`);
  if (batches.length === 0) return [];
  let rows = 0;
  for (const b of batches) {
    if (!(b instanceof arrow.RecordBatch) || !(b.data instanceof arrow.Data) || !(b.schema instanceof arrow.Schema)) {
      throw new Failed(`exchanger ${JSON.stringify(name)}: push/finish returned a ${b?.constructor?.name ?? typeof b} that is not a real apache-arrow RecordBatch`);
    }
    if (!sameFields(b.schema, output)) {
      throw new Failed(`exchanger ${JSON.stringify(name)}: push/finish returned a batch whose schema (${b.schema.fields.join(', ')}) is not the output schema open returned (${output.fields.join(', ')})`);
    }
    if (b.data.length !== b.numRows || b.data.children.some((c) => c.length !== b.numRows)) {
      throw new Failed(`exchanger ${JSON.stringify(name)}: push/finish returned a batch of ${b.numRows} rows whose columns do not hold exactly them`);
    }
    rows += b.numRows;
  }
  if (checkOnly) return [];
  if (!dictionaries) return batches.map((b) => recordBatchMessage(b.numRows, b.data.children));
  const stream = arrow.RecordBatchStreamWriter.writeAll(batches.map((b) => new arrow.RecordBatch(output, b.data))).toUint8Array(true);
  const out = messages(stream).slice(1);
  const written = out.filter((m) => headerKind(m.header) === RECORD_BATCH).reduce((n, m) => n + recordBatchLength(m.header), 0);
  if (written !== rows) {
    throw new Failed(`exchanger ${JSON.stringify(name)}: ${rows} rows returned but ${written} encoded`);
  }
  return out;
}

/** Whether any field of `schema`, at any depth, has a type `matches` accepts. */
function anyType(schema, matches) {
  const found = (t) => matches(t) || (t.children ?? []).some((f) => found(f.type));
  return schema.fields.some((f) => found(f.type));
}

/** Whether any field of `schema`, at any depth, is dictionary-encoded (its
 *  values then travel in messages of their own, which apache-arrow's writer makes). */
function hasDictionaries(schema) {
  return anyType(schema, (t) => arrow.DataType.isDictionary(t));
}

/** One record batch message (header padded to 8 bytes, body) of `length` rows
 *  of `columns` (arrow Data, no dictionary among them): what apache-arrow's
 *  stream writer writes for them, without a writer, a schema message and a
 *  joined stream per batch. */
function recordBatchMessage(length, columns) {
  const assembler = new VectorAssembler();
  assembler.visitMany(columns);
  const { byteLength, nodes, bufferRegions, buffers, variadicBufferCounts } = assembler;
  const metadata = new RecordBatchHeader(length, nodes, bufferRegions, null, variadicBufferCounts);
  const encoded = arrow.Message.encode(arrow.Message.from(metadata, byteLength));
  const header = new Uint8Array((encoded.length + 7) & ~7);
  header.set(encoded);
  const body = new Uint8Array(byteLength);
  buffers.forEach((b, i) => body.set(new Uint8Array(b.buffer, b.byteOffset, b.byteLength), bufferRegions[i].offset));
  return { header, body };
}

function sameFields(a, b) {
  return a.fields.length === b.fields.length
    && a.fields.every((f, i) => f.name === b.fields[i].name && f.nullable === b.fields[i].nullable
      && f.type.typeId === b.fields[i].type.typeId && String(f.type) === String(b.fields[i].type));
}

function guard(f, tag) {
  try {
    return f();
  } catch (e) {
    if (e instanceof ExchangeError) throw e;
    if (e instanceof RangeError && /memory|allocat/i.test(String(e.message))) throw e;
    const text = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack || ''}` : String(e);
    throw new ExchangeError(tag, text);
  }
}

/** A RecordBatch of `schema` over `data`, whose every column is `data.length`
 *  rows long (the caller's check): apache-arrow's constructor would make a new
 *  Schema and Struct only to find nothing to pad. */
function recordBatchOf(schema, data) {
  const batch = Object.create(arrow.RecordBatch.prototype);
  batch.schema = schema;
  batch.data = data;
  batch._metadata = new Map();
  return batch;
}

/** The record batch of `schema` (which holds no dictionary) that a record
 *  batch message's `header` describes over `body`, its columns views of
 *  `body`: what apache-arrow's stream reader makes of it, without a reader,
 *  a schema message and a stream per batch. */
function loadRecordBatch(schema, header, body) {
  const metadata = arrow.Message.decode(header).header();
  if (metadata.compression != null) throw new InvalidInput('a compressed record batch (the host never sends one)');
  const children = new VectorLoader(body, metadata.nodes, metadata.buffers, new Map(), schema.metadataVersion, metadata.variadicBufferCounts)
    .visitMany(schema.fields);
  if (children.some((c) => c.length !== metadata.length)) throw new InvalidInput('a record batch whose columns are not as long as it');
  return recordBatchOf(schema, arrow.makeData({ type: new arrow.Struct(schema.fields), length: metadata.length, nullCount: 0, children }));
}

/** The columns of `b` that are `input`'s own (the same arrow Data), by index. */
function sources(b, input, passThrough) {
  const inputs = input ? input.data.children : [];
  return b.data.children.map((child) => {
    const k = passThrough && input && b.numRows === input.numRows ? inputs.indexOf(child) : -1;
    return k >= 0 ? { tag: 'input', val: k } : { tag: 'emitted' };
  });
}

/** Emits `batches` (checked like any output) through `emit`, one call each:
 *  a column that is one of `input`'s own is named, the rest encoded. */
function emitBatches(batches, output, dictionaries, name, input, emit, passThrough) {
  encode(batches, output, name, dictionaries, true);
  for (const b of batches) {
    const columns = sources(b, input, passThrough && !dictionaries);
    const kept = columns.map((c, i) => (c.tag === 'emitted' ? i : -1)).filter((i) => i >= 0);
    let messages = [];
    if (kept.length === columns.length) {
      messages = encode([b], output, name, dictionaries);
    } else if (kept.length > 0) {
      // Passing columns through implies no dictionary in the output.
      messages = [recordBatchMessage(b.numRows, kept.map((i) => b.data.children[i]))];
    }
    try {
      emit(columns, messages);
    } catch (e) {
      throw new Failed(`the host refused an emit: ${e?.payload ?? e}`);
    }
  }
}

// ---- Input on demand ----------------------------------------------------------

/** The buffers of an apache-arrow Data, all of which a lazy column defers. */
const BUFFERS = ['values', 'valueOffsets', 'nullBitmap', 'typeIds'];

/** Whether a lazy Data can stand for every column of `schema`: no dictionary
 *  (its values arrive in messages of their own) and no view type (variadic
 *  buffers), at any depth. Nested columns (struct, list, map, union) can. */
function deferrable(schema) {
  return !anyType(schema, (t) => arrow.DataType.isDictionary(t)
    || t.typeId === arrow.Type.Utf8View || t.typeId === arrow.Type.BinaryView);
}

/** `data` and its descendants, parents first. */
function tree(data) {
  return [data, ...(data.children ?? []).flatMap(tree)];
}

/** One zeroed body, grown as needed, that header-only batches are read over:
 *  apache-arrow's reader wants the body's bytes, which no lazy column shows. */
let zeros = new Uint8Array(0);
function zeroBody(length) {
  if (zeros.length < length) zeros = new Uint8Array(length);
  return zeros.subarray(0, length);
}

/** Makes each column of `batch` (read over a zeroed body) fetch its buffers from
 *  the host, through `readColumns`, the first time any of them, or any of its
 *  children's, is touched: a nested column is fetched whole, once. A column
 *  that is only passed through is never fetched. */
function deferColumns(batch, schema, readColumns) {
  batch.data.children.forEach((column, k) => {
    const placeholders = tree(column);
    // Once loaded, every getter below is replaced by the value; a failed load
    // fails every later touch alike instead of asking the host again.
    let failure = null;
    const load = () => {
      if (failure) throw failure;
      try {
        const { header, body } = readColumns([k]);
        if (headerKind(header) !== RECORD_BATCH) throw new Failed(`the host sent input column ${k} as another kind of message`);
        const one = loadRecordBatch(new arrow.Schema([schema.fields[k]]), header, body);
        const real = tree(one.data.children[0]);
        if (real.length !== placeholders.length || real.some((node, i) => node.length !== placeholders[i].length)) {
          throw new Failed(`the host sent input column ${k} in another shape than its header`);
        }
        placeholders.forEach((node, i) => {
          for (const name of BUFFERS) {
            Object.defineProperty(node, name, { value: real[i][name], writable: true, configurable: true, enumerable: true });
          }
        });
      } catch (e) {
        failure = e;
        throw e;
      }
    };
    for (const node of placeholders) {
      for (const name of BUFFERS) {
        Object.defineProperty(node, name, {
          get() { load(); return node[name]; },
          set(value) { load(); Object.defineProperty(node, name, { value, writable: true, configurable: true, enumerable: true }); },
          configurable: true,
          enumerable: true,
        });
      }
    }
  });
}

/** The `exchange` interface object for `cls`, emitting through `emit`
 *  (contract 0.2's import; `mallard-exchanger.js` binds the real one). With
 *  `passThrough: false` every column is encoded (for tests that read the
 *  emitted messages on their own). With `input` (contract 0.2's `input`
 *  import: `readOnDemand`, `readColumns`), an input without dictionary or view
 *  columns is read on demand: a batch arrives as its header, and a column's
 *  buffers (a nested column's whole tree) are fetched the first time the
 *  exchanger touches them. */
export function exportExchangerWith(cls, emit, { passThrough = true, input = null } = {}) {
  class Session {
    constructor(exchanger, input, output, schema, onDemand) {
      this.exchanger = exchanger;
      this.input = input;
      this.output = output;
      this.schema = schema;
      this.onDemand = onDemand;
      this.dictionaries = [];
      // Both schemas are fixed at open: whether a batch can skip apache-arrow's
      // reader and writer is decided once, not per batch.
      this.inputDictionaries = hasDictionaries(schema);
      this.outputDictionaries = hasDictionaries(exchanger.output);
    }
    outputSchema() {
      return this.output;
    }
    push(header, body) {
      const kind = guard(() => headerKind(header), 'invalid-input');
      if (kind === DICTIONARY_BATCH) {
        this.dictionaries.push(frame(header, body));
        return;
      }
      const batches = guard(() => {
        const sent = this.onDemand && kind === RECORD_BATCH ? zeroBody(bodyLength(header)) : body;
        let read;
        if (kind === RECORD_BATCH && this.dictionaries.length === 0 && !this.inputDictionaries) {
          read = [loadRecordBatch(this.schema, header, sent)];
        } else {
          // The stream as chunks, the body its own: the reader takes a chunk that
          // holds exactly a body as it is, so the batch is never copied here.
          const chunks = [frame(this.input, new Uint8Array(0)), ...this.dictionaries, framePrefix(header), sent, EOS];
          read = [...arrow.RecordBatchReader.from(chunks)];
        }
        if (sent !== body) {
          for (const batch of read) deferColumns(batch, this.schema, input.readColumns);
        }
        return read;
      }, 'invalid-input');
      for (const batch of batches) {
        guard(() => emitBatches(this.exchanger.push(batch), this.exchanger.output, this.outputDictionaries, cls.info.name, batch, emit, passThrough), 'failed');
      }
    }
    finish() {
      guard(() => emitBatches(this.exchanger.finish(), this.exchanger.output, this.outputDictionaries, cls.info.name, null, emit, passThrough), 'failed');
    }
    stateless() {
      return Boolean(this.exchanger.stateless);
    }
  }
  return {
    describe() {
      const { name, version, description } = cls.info;
      return { name, version, description: description || '' };
    },
    open(inputSchema, params) {
      const schema = guard(() => arrow.RecordBatchReader.from(concat([frame(inputSchema, new Uint8Array(0)), EOS])).open().schema, 'invalid-input');
      const exchanger = new cls();
      const output = guard(() => {
        const out = exchanger.open(schema, Object.fromEntries(params));
        if (!(out instanceof arrow.Schema)) throw new Failed('open returned no arrow Schema');
        exchanger.output = out;
        return schemaHeader(out);
      }, 'failed');
      const onDemand = Boolean(input) && deferrable(schema) && input.readOnDemand();
      return new Session(exchanger, inputSchema, output, schema, onDemand);
    },
    Session,
  };
}

const DICTIONARY_BATCH = 2;

/** Message.header_type (slot 1) of a flatbuffer IPC header. */
function headerKind(header) {
  const [view, at] = messageSlot(header, 1);
  return at ? view.getUint8(at) : 0;
}
