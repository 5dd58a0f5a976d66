// Hostile: returns objects that only look like RecordBatches; the SDK must refuse
// them (a stream must never end OK with rows lost).
import { Exchanger, exportExchanger, arrow } from '../../mallard-exchanger.js';

class Lookalike extends Exchanger {
  static info = { name: 'js_lookalike', version: '0.1.0', description: '' };
  push(batch) {
    return [Object.create(arrow.RecordBatch.prototype, { schema: { value: batch.schema }, numRows: { value: batch.numRows } })];
  }
}

export const exchange = exportExchanger(Lookalike);
