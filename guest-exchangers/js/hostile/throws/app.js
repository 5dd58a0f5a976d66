// Hostile: throws an arbitrary error on the second batch.
import { Exchanger, exportExchanger } from '../../mallard-exchanger.js';

class Throws extends Exchanger {
  static info = { name: 'js_throws', version: '0.1.0', description: '' };
  seen = 0;
  push(batch) {
    if (++this.seen === 2) throw new TypeError('the guest gave up on batch 2');
    return [batch];
  }
}

export const exchange = exportExchanger(Throws);
