"""Hostile: raises an arbitrary exception on the second batch."""

from mallard_exchanger import Exchanger, export


class Raises(Exchanger):
    name, version = "py_raises", "0.1.0"
    seen = 0

    def push(self, batch):
        self.seen += 1
        if self.seen == 2:
            raise RuntimeError("the guest gave up on batch 2")
        return [batch]


Exchange = export(Raises)
