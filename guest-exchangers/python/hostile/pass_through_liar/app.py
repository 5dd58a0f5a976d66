"""Hostile (contract 0.2), written against the bindings directly: lies to the
host's `emit` and `input` as the `lie` parameter says.

- `index`: names input column 99 of a batch that has far fewer.
- `flood`: emits 5,000 empty batches from one call, ignoring the refusals.
- `in-open`: calls `emit` from `open`.
- `read-index`: reads input column 99 on demand, ignoring the refusal.
- `read-twice`: reads input column 0 twice in one call, ignoring the refusal.
"""

from componentize_py_types import Err
from mallard_exchanger import ipc
from wit_world.imports import input as host_input
from wit_world.imports import output as host
from wit_world.imports import types


class Session:
    def __init__(self, schema, fields, lie):
        self.schema = schema
        self.fields = fields
        self.lie = lie

    def output_schema(self):
        return self.schema

    def push(self, header, body):
        if self.lie == "index":
            host.emit([types.ColumnSource_Input(99)] * self.fields, [])
        elif self.lie in ("read-index", "read-twice"):
            try:
                host_input.read_columns([99] if self.lie == "read-index" else [0, 0])
            except Err:
                pass
        elif self.lie == "flood":
            for _ in range(5_000):
                try:
                    host.emit([types.ColumnSource_Emitted()] * self.fields, [])
                except Err:
                    pass

    def finish(self):
        pass

    def stateless(self):
        return False


class Exchange:
    def describe(self):
        return types.Info("py_pass_through_liar", "0.1.0", "lies to emit (contract 0.2)")

    def open(self, input_schema, params):
        lie = dict(params).get("lie")
        fields = len(ipc.read_schema(input_schema).fields)
        if lie == "in-open":
            try:
                host.emit([], [])
            except Err:
                pass
        if lie in ("read-index", "read-twice"):
            host_input.read_on_demand()
        return Session(input_schema, fields, lie)
