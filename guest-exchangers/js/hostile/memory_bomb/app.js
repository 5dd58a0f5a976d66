// Hostile: grows without bound in `push` (the host's memory limit ends it).
import { Exchanger, exportExchanger } from '../../mallard-exchanger.js';

class MemoryBomb extends Exchanger {
  static info = { name: 'js_memory_bomb', version: '0.1.0', description: '' };
  push() {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(16 << 20).fill(7));
  }
}

export const exchange = exportExchanger(MemoryBomb);
