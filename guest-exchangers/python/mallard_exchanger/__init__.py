"""Mallard exchangers in Python: streaming, stateful Arrow transforms that run
in Mallard's WebAssembly sandbox (built with componentize-py).

    from mallard_exchanger import Exchanger, Column, Field, bool_, export

    class AddProcessed(Exchanger):
        name, version = "add_processed", "1.0.0"
        description = "appends a boolean column `processed` = true"

        def open(self, schema, params):
            return schema.append(Field("processed", bool_, nullable=False))

        def push(self, batch):
            done = Column.constant(bool_, True, batch.num_rows)
            return [batch.append(self.output.fields[-1], done)]

    Exchange = export(AddProcessed)

The same model as the Rust SDK: `open(schema, params)` returns the output
schema (kept as `self.output`), `push(batch)` returns output batches,
`finish()` flushes. Columns passed through are never decoded or copied by
Python code, nor sent back: the component speaks Mallard's exchanger contract
0.2, so an output column that is one of the input batch's own columns is named
to the host, which reuses its copy, and output leaves through the host's `emit`
during each call (memory stays flat however long the stream). Input columns are
read from the host only when the exchanger first touches their buffers, so a
column that is only passed through never enters the sandbox. Raise `InvalidParams`, `InvalidInput` or `Failed` to refuse a
stream; any other exception ends it as `failed` with its traceback.
"""

import traceback

from . import ipc
from .batch import Batch, Column
from .ipc import (
    DataType, Field, Schema, binary, bool_, date32, decimal128, float32, float64,
    int8, int16, int32, int64, timestamp, uint8, uint16, uint32, uint64, utf8,
)

__all__ = [
    "Batch", "Column", "DataType", "Exchanger", "Failed", "Field", "InvalidInput",
    "InvalidParams", "Schema", "binary", "bool_", "date32", "decimal128", "export",
    "float32", "float64", "int8", "int16", "int32", "int64", "timestamp", "uint8",
    "uint16", "uint32", "uint64", "utf8",
]

# Longest error text handed to the host (a traceback can be long).
MAX_ERROR_CHARS = 4096


class ExchangeError(Exception):
    """A refusal the client sees with its message."""


class InvalidParams(ExchangeError):
    """The parameters are missing, malformed or unknown."""


class InvalidInput(ExchangeError):
    """The input schema or a batch is not what this exchanger works on."""


class Failed(ExchangeError):
    """Anything else."""


class Exchanger:
    """Subclass and set `name`, `version`, `description`; override `open`,
    `push` and, for exchangers that hold rows back, `finish`. One instance
    serves one stream."""

    name = "unnamed"
    version = "0.0.0"
    description = ""

    #: The output schema `open` returned.
    output = None

    #: True when each output batch depends only on its input batch and the
    #: params (no state between batches, nothing from `finish`): the server may
    #: then run one stream on several instances. Read once, after `open`.
    stateless = False

    def open(self, schema, params):
        """Check `schema` and `params` (a dict of strings); return the output schema."""
        return schema

    def push(self, batch):
        """Transform one input batch into zero or more output batches."""
        return [batch]

    def finish(self):
        """End of input: return whatever is still held."""
        return []


def export(cls):
    """The `Exchange` class componentize-py exports for the exchanger `cls`.
    Bind it at module level in `app.py`: `Exchange = export(MyExchanger)`."""
    from componentize_py_types import Err
    from wit_world.imports import output as host
    from wit_world.imports import input as host_input
    from wit_world.imports import types

    def refusal(e, default):
        if isinstance(e, InvalidParams):
            variant = types.ExchangeError_InvalidParams
        elif isinstance(e, InvalidInput) or (default is types.ExchangeError_InvalidInput):
            variant = types.ExchangeError_InvalidInput
        else:
            variant = types.ExchangeError_Failed
        text = str(e) if isinstance(e, ExchangeError) else (
            f"{type(e).__name__}: {e}\n" + "".join(traceback.format_tb(e.__traceback__))
        )
        return Err(variant(text[:MAX_ERROR_CHARS]))

    def run(what, default):
        try:
            return what()
        except Err:
            raise
        except ExchangeError as e:
            raise refusal(e, default) from None
        except MemoryError:
            # Let the host see the refused growth as the memory limit it is.
            raise
        except Exception as e:
            raise refusal(e, default) from None

    def emit(sources, messages):
        try:
            host.emit(sources, messages)
        except Err as refused:
            raise Err(types.ExchangeError_Failed(f"the host refused an emit: {refused.value}")) from None

    def emit_batches(batches, output, current=None):
        """Emits each batch; a column that is one of `current`'s (the pushed
        batch's) own columns is named, not sent."""
        fields = len(output.fields)
        if any(f.dictionary is not None for f in output.fields):
            current = None  # the host's rule: no pass-through beside dictionaries
        for batch in batches:
            if not isinstance(batch, Batch):
                raise Failed(
                    f"exchanger {cls.name!r}: push/finish returned {type(batch).__name__}, not a Batch"
                )
            if batch.schema.fields != output.fields:
                raise Failed(
                    f"exchanger {cls.name!r}: push/finish returned a batch whose schema is not "
                    "the output schema open returned"
                )
            sources, kept, kept_fields = [], [], []
            for field, column in zip(batch.schema.fields, batch.columns):
                k = None
                if current is not None and batch.num_rows == current.num_rows:
                    k = next((i for i, c in enumerate(current.columns) if c is column), None)
                if k is None:
                    sources.append(types.ColumnSource_Emitted())
                    kept.append(column)
                    kept_fields.append(field)
                else:
                    sources.append(types.ColumnSource_Input(k))
            if len(kept) == fields:
                header, body = batch.encode()
                messages = [types.IpcMessage(header, body)]
            elif kept:
                part = Batch(ipc.Schema(kept_fields), kept, batch.num_rows)
                header, body = part.encode()
                messages = [types.IpcMessage(header, body)]
            else:
                messages = []
            emit(sources, messages)

    def read_column(k):
        message = host_input.read_columns([k])
        return message.header, message.body

    class Session:
        def __init__(self, exchanger, schema, output, on_demand):
            self.exchanger = exchanger
            self.schema = schema
            self.output = output
            # Input on demand: pushes bring headers only; a column's buffers are
            # read from the host when the exchanger first touches them.
            self.read = read_column if on_demand else None

        def output_schema(self):
            return self.output

        def stateless(self):
            return bool(self.exchanger.stateless)

        def push(self, header, body):
            message = run(lambda: ipc.read_message(header), types.ExchangeError_InvalidInput)
            output = self.exchanger.output
            if message.kind == ipc.DICTIONARY_BATCH:
                every = [types.ColumnSource_Emitted() for _ in output.fields]
                emit(every, [types.IpcMessage(header, body)])
                return
            if message.kind != ipc.RECORD_BATCH:
                raise Err(types.ExchangeError_InvalidInput(f"unexpected IPC message kind {message.kind}"))
            batch = run(
                lambda: Batch.from_message(self.schema, message, body, self.read),
                types.ExchangeError_InvalidInput,
            )
            run(
                lambda: emit_batches(self.exchanger.push(batch), output, batch),
                types.ExchangeError_Failed,
            )

        def finish(self):
            run(
                lambda: emit_batches(self.exchanger.finish(), self.exchanger.output),
                types.ExchangeError_Failed,
            )

    class Exchange:
        def describe(self):
            return types.Info(cls.name, cls.version, cls.description)

        def open(self, input_schema, params):
            schema = run(lambda: ipc.read_schema(input_schema), types.ExchangeError_InvalidInput)
            exchanger = cls()

            def opened():
                output = exchanger.open(schema, dict(params))
                if not isinstance(output, Schema):
                    raise Failed(f"open returned {type(output).__name__}, not a Schema")
                exchanger.output = output
                return ipc.write_schema(output)

            output = run(opened, types.ExchangeError_Failed)
            return Session(exchanger, schema, output, host_input.read_on_demand())

    return Exchange
