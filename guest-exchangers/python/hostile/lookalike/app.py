"""Hostile: returns batches of a schema other than the one it declared; the SDK
must refuse them (a stream must never end OK with rows lost)."""

from mallard_exchanger import Exchanger, export


class Lookalike(Exchanger):
    name, version = "py_lookalike", "0.1.0"

    def push(self, batch):
        # Declared: the input schema. Returned: its first column only.
        return [batch.select([batch.schema.fields[0].name])]


Exchange = export(Lookalike)
