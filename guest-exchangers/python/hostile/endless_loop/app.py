"""Hostile: never returns from `push` (the host's per-call deadline ends it)."""

from mallard_exchanger import Exchanger, export


class EndlessLoop(Exchanger):
    name, version = "py_endless_loop", "0.1.0"
    # Claims to be stateless, as a hostile guest would, to be given more
    # instances: each must be stopped at its deadline.
    stateless = True

    def push(self, batch):
        n = 0
        while True:
            n += 1


Exchange = export(EndlessLoop)
