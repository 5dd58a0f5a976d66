// Hostile: never returns from `push` (the host's per-call deadline ends it).
import { Exchanger, exportExchanger } from '../../mallard-exchanger.js';

class EndlessLoop extends Exchanger {
  static info = { name: 'js_endless_loop', version: '0.1.0', description: '' };
  // Claims to be stateless, as a hostile guest would, to be given more
  // instances: each must be stopped at its deadline.
  stateless = true;
  push() {
    let n = 0;
    for (;;) n++;
  }
}

export const exchange = exportExchanger(EndlessLoop);
