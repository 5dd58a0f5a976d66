"""Hostile: grows without bound in `push` (the host's memory limit ends it)."""

from mallard_exchanger import Exchanger, export


class MemoryBomb(Exchanger):
    name, version = "py_memory_bomb", "0.1.0"

    def push(self, batch):
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))


Exchange = export(MemoryBomb)
