// `running_totals` in JavaScript: appends `running_total`, the cumulative sum of
// a numeric column over the stream so far, optionally per utf8 `key`. Nulls add
// nothing; integer inputs give an int64 total, floats a float64.
import { Exchanger, InvalidInput, InvalidParams, appendColumn, arrow, exportExchanger } from '../mallard-exchanger.js';

const { Type } = arrow;

class RunningTotals extends Exchanger {
  static info = { name: 'running_totals', version: '1.0.0', description: 'appends `running_total`: cumulative sum of `value` (per `key` if given)' };

  open(schema, params) {
    const find = (name) => schema.fields.findIndex((f) => f.name === name);
    this.value = find(params.value ?? 'passengers');
    if (this.value < 0) throw new InvalidParams(`no column \`${params.value ?? 'passengers'}\``);
    const type = schema.fields[this.value].type;
    this.float = type.typeId === Type.Float;
    if (!this.float && !(type.typeId === Type.Int && type.isSigned)) {
      throw new InvalidInput(`column \`${schema.fields[this.value].name}\` is ${type}, expected an integer or float column`);
    }
    this.wide = !this.float && type.bitWidth === 64;
    this.key = -1;
    if (params.key !== undefined) {
      this.key = find(params.key);
      if (this.key < 0) throw new InvalidParams(`no column \`${params.key}\``);
      if (schema.fields[this.key].type.typeId !== Type.Utf8) throw new InvalidInput(`key \`${params.key}\` must be utf8`);
    }
    this.zero = this.wide ? 0n : 0;
    this.total = this.zero;
    this.byKey = new Map();
    const total = new arrow.Field('running_total', this.float ? new arrow.Float64() : new arrow.Int64(), false);
    return new arrow.Schema([...schema.fields, total]);
  }

  push(batch) {
    const column = batch.data.children[this.value];
    const { values, nullBitmap, offset, length } = column;
    const valid = (i) => !nullBitmap || column.nullCount === 0 || (nullBitmap[(offset + i) >> 3] >> ((offset + i) & 7)) & 1;
    const out = this.float ? new Float64Array(length) : new BigInt64Array(length);
    const keys = this.key >= 0 ? batch.getChildAt(this.key) : null;
    let total = this.total;
    for (let i = 0; i < length; i++) {
      const v = valid(i) ? values[offset + i] : this.zero;
      let t;
      if (keys === null) {
        t = total += v;
      } else {
        const k = keys.get(i);
        if (k === null) {
          t = v;
        } else {
          t = (this.byKey.get(k) ?? this.zero) + v;
          this.byKey.set(k, t);
        }
      }
      out[i] = this.float ? t : BigInt(t);
    }
    this.total = total;
    const data = arrow.makeData({ type: this.output.fields.at(-1).type, length, nullCount: 0, data: out });
    return [appendColumn(batch, this.output, data)];
  }
}

export const exchange = exportExchanger(RunningTotals);
