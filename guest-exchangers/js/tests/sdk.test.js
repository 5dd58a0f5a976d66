// Unit tests of the JavaScript SDK's IPC framing and columns, checked with
// apache-arrow's own reader. Bundled with esbuild and run by node from
// `host/tests/polyglot.rs`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Exchanger, InvalidInput, appendColumn, arrow, constantColumn, exportExchangerWith, frame, withField } from '../mallard-exchanger-core.js';

/** The exported interface with a stub `emit` that keeps what each call emits,
 *  every column encoded, so `session.push` answers with that call's messages. */
function exportExchanger(cls) {
  let emitted = [];
  const exchange = exportExchangerWith(cls, (columns, messages) => {
    assert.ok(columns.every((c) => c.tag === 'emitted'));
    emitted.push(...messages);
  }, { passThrough: false });
  const during = (call) => {
    emitted = [];
    call();
    return emitted;
  };
  return {
    ...exchange,
    open(schema, params) {
      const session = exchange.open(schema, params);
      return {
        outputSchema: () => session.outputSchema(),
        push: (header, body) => during(() => session.push(header, body)),
        finish: () => during(() => session.finish()),
        stateless: () => session.stateless(),
      };
    },
  };
}

function messages(table) {
  const stream = arrow.tableToIPC(table, 'stream');
  const view = new DataView(stream.buffer, stream.byteOffset);
  const out = [];
  let at = 0;
  for (;;) {
    const len = view.getInt32(at + 4, true);
    if (len === 0) break;
    const header = stream.slice(at + 8, at + 8 + len);
    const body = bodyOf(stream, at + 8 + len, header);
    out.push({ header, body });
    at += 8 + len + body.length;
  }
  return out;
}

function bodyOf(stream, at, header) {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const table = view.getUint32(0, true);
  const vtable = table - view.getInt32(table, true);
  const off = view.getUint16(vtable, true) > 10 ? view.getUint16(vtable + 10, true) : 0;
  const n = off ? Number(view.getBigInt64(table + off, true)) : 0;
  return stream.slice(at, at + n);
}


function read(schemaHeader, outputs) {
  const parts = [frame(schemaHeader, new Uint8Array(0)), ...outputs.map((m) => frame(m.header, m.body)), new Uint8Array([255, 255, 255, 255, 0, 0, 0, 0])];
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return new arrow.Table([...arrow.RecordBatchReader.from(all)]);
}

const input = arrow.tableFromArrays({
  id: BigInt64Array.from({ length: 1000 }, (_, i) => BigInt(i)),
  carrier: Array.from({ length: 1000 }, (_, i) => (i % 7 ? `C${i % 5}` : null)),
  passengers: Int32Array.from({ length: 1000 }, (_, i) => i % 300),
});

class AddProcessed extends Exchanger {
  static info = { name: 'add_processed', version: '1.0.0', description: 'test' };
  open(schema) {
    if (schema.fields.some((f) => f.name === 'processed')) throw new InvalidInput('already processed');
    return withField(schema, new arrow.Field('processed', new arrow.Bool(), false));
  }
  push(batch) {
    return [appendColumn(batch, this.output, constantColumn(new arrow.Bool(), true, batch.numRows))];
  }
}

test('a session appends a column and passes the others through', () => {
  const exchange = exportExchanger(AddProcessed);
  assert.equal(exchange.describe().name, 'add_processed');
  const [schema, ...batches] = messages(input);
  const session = exchange.open(schema.header, []);
  const out = batches.flatMap((m) => session.push(m.header, m.body));
  const table = read(session.outputSchema(), [...out, ...session.finish()]);
  assert.equal(table.numRows, 1000);
  assert.deepEqual(table.getChild('carrier').toArray(), input.getChild('carrier').toArray());
  assert.deepEqual([...table.getChild('id')], [...input.getChild('id')]);
  assert.ok([...table.getChild('processed')].every((v) => v === true));
});

test('a session is stateful unless its exchanger says otherwise', () => {
  const [schema] = messages(input);
  assert.equal(exportExchanger(AddProcessed).open(schema.header, []).stateless(), false);
  class PerBatch extends AddProcessed {
    stateless = true;
  }
  assert.equal(exportExchanger(PerBatch).open(schema.header, []).stateless(), true);
});

test('refusals carry the WIT variant the host maps to a status', () => {
  const exchange = exportExchanger(AddProcessed);
  const processed = arrow.tableFromArrays({ processed: [true] });
  assert.throws(() => exchange.open(messages(processed)[0].header, []), (e) => e.payload.tag === 'invalid-input' && e.payload.val === 'already processed');
  assert.throws(() => exchange.open(new Uint8Array([1, 2, 3]), []), (e) => e.payload.tag === 'invalid-input');
});

test('an arbitrary exception becomes `failed` with its message', () => {
  class Broken extends Exchanger {
    push() { throw new TypeError('nope'); }
  }
  const exchange = exportExchanger(Broken);
  // `carrier` is dictionary-encoded by tableFromArrays: the dictionary is held,
  // the record batch reaches `push`.
  const [schema, dictionary, batch] = messages(input);
  const session = exchange.open(schema.header, []);
  assert.deepEqual(session.push(dictionary.header, dictionary.body), []);
  assert.throws(() => session.push(batch.header, batch.body), (e) => e.payload.tag === 'failed' && e.payload.val.startsWith('TypeError: nope'));
});

test('constant columns of every kind have the right length and nulls', () => {
  assert.equal(constantColumn(new arrow.Int32(), 7, 10).length, 10);
  assert.equal(constantColumn(new arrow.Utf8(), 'x', 3).length, 3);
  assert.equal(constantColumn(new arrow.Float64(), null, 4).nullCount, 4);
  const batch = [...arrow.RecordBatchReader.from(arrow.tableToIPC(input, 'stream'))][0];
  assert.throws(() => appendColumn(batch, batch.schema, constantColumn(new arrow.Int32(), 1, 5)), /5 rows/);
});

test('what is not a batch of the output schema is refused, never dropped', () => {
  const [schema, dictionary, batch] = messages(input);
  const liars = {
    lookalike: (b) => [Object.create(arrow.RecordBatch.prototype, { schema: { value: b.schema } })],
    plainObject: (b) => [{ numRows: b.numRows, schema: b.schema, data: b.data }],
    otherSchema: (b) => [b],
    notAnArray: (b) => b,
  };
  for (const [what, lie] of Object.entries(liars)) {
    class Liar extends AddProcessed {
      static info = { name: 'liar', version: '1.0.0', description: what };
      push(b) { return lie(b); }
    }
    const session = exportExchanger(Liar).open(schema.header, []);
    session.push(dictionary.header, dictionary.body);
    assert.throws(
      () => session.push(batch.header, batch.body),
      (e) => e.payload.tag === 'failed' && e.payload.val.includes('"liar"'),
      what,
    );
  }
});

test('columns returned unchanged are named, not sent', () => {
  const plain = arrow.tableFromArrays({ id: Int32Array.from([1, 2, 3]), x: Float64Array.from([1, 2, 3]) });
  const [schema, batch] = messages(plain);
  const calls = [];
  const session = exportExchangerWith(AddProcessed, (columns, sent) => calls.push({ columns, sent })).open(schema.header, []);
  session.push(batch.header, batch.body);
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0].columns, [{ tag: 'input', val: 0 }, { tag: 'input', val: 1 }, { tag: 'emitted' }]);
  assert.equal(calls[0].sent.length, 1, 'one message: the processed column alone');
  // With a dictionary column in the output (tableFromArrays encodes strings so),
  // every column is sent: the host's rule.
  const [dictSchema, dictionary, dictBatch] = messages(input);
  const dictCalls = [];
  const dictSession = exportExchangerWith(AddProcessed, (columns) => dictCalls.push(columns)).open(dictSchema.header, []);
  dictSession.push(dictionary.header, dictionary.body);
  dictSession.push(dictBatch.header, dictBatch.body);
  assert.ok(dictCalls[0].every((c) => c.tag === 'emitted'));
});

test('a refused emit ends the call as failed, naming the refusal', () => {
  const plain = arrow.tableFromArrays({ id: Int32Array.from([1, 2, 3]) });
  const [schema, batch] = messages(plain);
  const refusing = () => { const e = new Error('refused'); e.payload = 'more than 4096 emits in one call'; throw e; };
  const session = exportExchangerWith(AddProcessed, refusing).open(schema.header, []);
  assert.throws(() => session.push(batch.header, batch.body), (e) => e.payload.tag === 'failed' && e.payload.val.includes('4096 emits'));
});

test('input read on demand fetches a column only when it is touched, once', () => {
  const plain = arrow.tableFromArrays({
    id: Int32Array.from({ length: 100 }, (_, i) => i),
    x: Float64Array.from({ length: 100 }, (_, i) => i / 2),
  });
  const [schema, batch] = messages(plain);
  const fetched = [];
  const readColumns = ([k]) => {
    fetched.push(k);
    const name = plain.schema.fields[k].name;
    const one = messages(new arrow.Table({ [name]: plain.getChild(name) }));
    return one[1];
  };
  class Doubler extends Exchanger {
    static info = { name: 'doubler', version: '1.0.0', description: 'test' };
    open(s) { return withField(s, new arrow.Field('twice', new arrow.Float64(), false)); }
    push(b) {
      const x = b.getChild('x').toArray();
      return [appendColumn(b, this.output, arrow.makeData({ type: new arrow.Float64(), length: b.numRows, data: x.map((v) => v * 2) }))];
    }
  }
  const calls = [];
  const session = exportExchangerWith(Doubler, (columns, sent) => calls.push({ columns, sent }), {
    input: { readOnDemand: () => true, readColumns },
  }).open(schema.header, []);
  session.push(batch.header, new Uint8Array(0));
  assert.deepEqual(fetched, [1], 'only the column the exchanger read');
  assert.deepEqual(calls[0].columns, [{ tag: 'input', val: 0 }, { tag: 'input', val: 1 }, { tag: 'emitted' }]);
  const [twiceSchema] = messages(arrow.tableFromArrays({ twice: Float64Array.from([]) }));
  const twice = read(twiceSchema.header, calls[0].sent);
  assert.deepEqual([...twice.getChild('twice')], Array.from({ length: 100 }, (_, i) => i));
  // A host that says no: the batch comes whole, nothing is fetched.
  const whole = exportExchangerWith(Doubler, () => {}, { input: { readOnDemand: () => false, readColumns } }).open(schema.header, []);
  whole.push(batch.header, batch.body);
  assert.deepEqual(fetched, [1]);
});

/** A table of a struct column, a list column and a flat one, 50 rows. */
function nestedInput() {
  const rows = 50;
  const s = arrow.vectorFromArray(
    Array.from({ length: rows }, (_, i) => ({ a: i, b: 'é'.repeat(i % 4) })),
    new arrow.Struct([new arrow.Field('a', new arrow.Int32()), new arrow.Field('b', new arrow.Utf8())]),
  );
  const l = arrow.vectorFromArray(
    Array.from({ length: rows }, (_, i) => Array.from({ length: i % 3 }, (_, j) => i + j)),
    new arrow.List(new arrow.Field('item', new arrow.Int32())),
  );
  const x = arrow.vectorFromArray(Array.from({ length: rows }, (_, i) => i / 2), new arrow.Float64());
  return new arrow.Table({ s, l, x });
}

/** A host's `readColumns` over `table`, recording what it was asked for. */
function hostOver(table, fetched) {
  return ([k]) => {
    fetched.push(k);
    const name = table.schema.fields[k].name;
    return messages(new arrow.Table({ [name]: table.getChild(name) }))[1];
  };
}

test('nested input columns are fetched whole, once, and only when touched', () => {
  const input = nestedInput();
  const [schema, batch] = messages(input);
  // Reads one child of the struct and the list's values; never the flat column.
  class Measures extends Exchanger {
    static info = { name: 'measures', version: '1.0.0', description: 'test' };
    open(s) { return withField(s, new arrow.Field('n', new arrow.Int32(), false)); }
    push(b) {
      const names = b.getChild('s').getChild('b');
      const lists = b.getChild('l');
      const n = Int32Array.from({ length: b.numRows }, (_, i) => names.get(i).length * 10 + lists.get(i).length);
      return [appendColumn(b, this.output, arrow.makeData({ type: new arrow.Int32(), length: b.numRows, data: n }))];
    }
  }
  const fetched = [];
  const calls = [];
  const session = exportExchangerWith(Measures, (columns, sent) => calls.push({ columns, sent }), {
    input: { readOnDemand: () => true, readColumns: hostOver(input, fetched) },
  }).open(schema.header, []);
  session.push(batch.header, new Uint8Array(0));
  assert.deepEqual(fetched, [0, 1], 'the struct and the list, each once; not the flat column');
  assert.deepEqual(calls[0].columns, [{ tag: 'input', val: 0 }, { tag: 'input', val: 1 }, { tag: 'input', val: 2 }, { tag: 'emitted' }]);
  const [nSchema] = messages(arrow.tableFromArrays({ n: Int32Array.from([]) }));
  const n = read(nSchema.header, calls[0].sent);
  assert.deepEqual([...n.getChild('n')], Array.from({ length: 50 }, (_, i) => (i % 4) * 10 + (i % 3)));
});

test('a nested column the host sends in another shape fails the call, every touch alike', () => {
  const input = nestedInput();
  const [schema, batch] = messages(input);
  const shorter = input.slice(0, 10);
  const fetched = [];
  let touches = 0;
  class Reader extends Exchanger {
    static info = { name: 'reader', version: '1.0.0', description: 'test' };
    open(s) { return s; }
    push(b) {
      for (let i = 0; i < 2; i++) {
        try { b.getChild('l').get(0); } catch (e) { touches += 1; if (i === 1) throw e; }
      }
      return [b];
    }
  }
  const session = exportExchangerWith(Reader, () => {}, {
    input: { readOnDemand: () => true, readColumns: hostOver(shorter, fetched) },
  }).open(schema.header, []);
  assert.throws(() => session.push(batch.header, new Uint8Array(0)), (e) => e.payload.tag === 'failed' && e.payload.val.includes('another shape'));
  assert.equal(touches, 2);
  assert.deepEqual(fetched, [1], 'asked once; the second touch fails alike without asking again');
});

test('a batch is encoded byte for byte as apache-arrow\'s stream writer encodes it, sliced columns too', () => {
  const n = 777;
  const nested = arrow.vectorFromArray(
    Array.from({ length: n }, (_, i) => (i % 5 ? { a: i, tags: i % 3 ? [`t${i}`, null] : [] } : null)),
    new arrow.Struct([
      new arrow.Field('a', new arrow.Int32()),
      new arrow.Field('tags', new arrow.List(new arrow.Field('item', new arrow.Utf8(), true))),
    ]),
  );
  const table = new arrow.Table({
    id: arrow.makeVector(BigInt64Array.from({ length: n }, (_, i) => BigInt(i))),
    name: arrow.vectorFromArray(Array.from({ length: n }, (_, i) => (i % 4 ? `name ${i} ${'é'.repeat(i % 9)}` : null)), new arrow.Utf8()),
    flag: arrow.vectorFromArray(Array.from({ length: n }, (_, i) => (i % 6 ? i % 2 === 0 : null)), new arrow.Bool()),
    at: arrow.vectorFromArray(Array.from({ length: n }, (_, i) => i * 1000), new arrow.TimestampMicrosecond()),
    x: arrow.makeVector(Float64Array.from({ length: n }, (_, i) => i / 3)),
    nested,
  });
  const [schema, batch] = messages(table);
  class Slices extends Exchanger {
    static info = { name: 'slices', version: '1.0.0', description: 'test' };
    push(b) {
      // A slice starts mid-byte of every bitmap and mid-way into every offsets buffer.
      return [b, b.slice(3, 500), b.slice(0, 0)];
    }
  }
  const session = exportExchanger(Slices).open(schema.header, []);
  const out = session.push(batch.header, batch.body);
  assert.equal(out.length, 3);
  const whole = messages(table)[1];
  const [, sliced] = messages(new arrow.Table([table.batches[0].slice(3, 500)]));
  const [, empty] = messages(new arrow.Table([table.batches[0].slice(0, 0)]));
  for (const [got, want] of [[out[0], whole], [out[1], sliced], [out[2], empty]]) {
    assert.deepEqual(got.header, want.header);
    assert.deepEqual(got.body, want.body);
  }
  const back = read(session.outputSchema(), out);
  assert.equal(back.numRows, n + 497);
  // Row n + 1 of the output is row 4 of the input (the slice starts at 3).
  const row = back.getChild('nested').get(n + 1);
  assert.equal(row.a, 4);
  assert.deepEqual([...row.tags], ['t4', null]);
  assert.equal(back.getChild('name').get(n + 1), table.getChild('name').get(4));
});

test('a batch whose columns are longer than its rows is refused, never cut', () => {
  const plain = arrow.tableFromArrays({ id: Int32Array.from([1, 2, 3, 4]) });
  const [schema, batch] = messages(plain);
  class Longer extends Exchanger {
    static info = { name: 'longer', version: '1.0.0', description: 'test' };
    push(b) {
      const data = arrow.makeData({ type: new arrow.Struct(b.schema.fields), length: 2, nullCount: 0, children: b.data.children });
      return [Object.assign(Object.create(arrow.RecordBatch.prototype), { schema: b.schema, data })];
    }
  }
  const session = exportExchanger(Longer).open(schema.header, []);
  assert.throws(() => session.push(batch.header, batch.body), (e) => e.payload.tag === 'failed' && e.payload.val.includes('do not hold exactly them'));
});
