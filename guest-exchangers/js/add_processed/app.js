// `add_processed` in JavaScript: appends a non-null boolean column `processed`,
// true on every row; every other column passes through.
import { Exchanger, InvalidInput, appendColumn, arrow, constantColumn, exportExchanger, withField } from '../mallard-exchanger.js';

class AddProcessed extends Exchanger {
  static info = { name: 'add_processed', version: '1.0.0', description: 'appends a boolean column `processed` = true to every batch' };
  stateless = true;

  open(schema) {
    if (schema.fields.some((f) => f.name === 'processed')) throw new InvalidInput('input already has a `processed` column');
    return withField(schema, new arrow.Field('processed', new arrow.Bool(), false));
  }

  push(batch) {
    return [appendColumn(batch, this.output, constantColumn(new arrow.Bool(), true, batch.numRows))];
  }
}

export const exchange = exportExchanger(AddProcessed);
