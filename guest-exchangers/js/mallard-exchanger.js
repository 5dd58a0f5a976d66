// The Mallard JavaScript exchanger SDK as a component imports it: everything of
// `mallard-exchanger-core.js`, with `exportExchanger` bound to the host's `emit`
// (exchanger contract 0.2: output leaves through the host during each call,
// columns passed through unchanged are named, not copied back, and input columns
// are read from the host only when the exchanger touches them).
//
//   import { Exchanger, exportExchanger, appendColumn, constantColumn, arrow } from 'mallard-exchanger';
//   export const exchange = exportExchanger(AddProcessed);
import { emit } from 'mallard:exchanger/output@0.2.0';
import { readColumns, readOnDemand } from 'mallard:exchanger/input@0.2.0';
import { exportExchangerWith } from './mallard-exchanger-core.js';

export * from './mallard-exchanger-core.js';

/** The `exchange` interface object componentize-js exports for `cls`:
 *  `export const exchange = exportExchanger(MyExchanger);` */
export function exportExchanger(cls) {
  return exportExchangerWith(cls, emit, { input: { readOnDemand, readColumns } });
}
