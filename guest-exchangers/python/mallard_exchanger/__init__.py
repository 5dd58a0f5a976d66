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
Python code. Raise `InvalidParams`, `InvalidInput` or `Failed` to refuse a
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

    def messages(batches, output):
        out = []
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
            header, body = batch.encode()
            out.append(types.IpcMessage(header, body))
        return out

    class Session:
        def __init__(self, exchanger, schema, output):
            self.exchanger = exchanger
            self.schema = schema
            self.output = output

        def output_schema(self):
            return self.output

        def push(self, header, body):
            message = run(lambda: ipc.read_message(header), types.ExchangeError_InvalidInput)
            if message.kind == ipc.DICTIONARY_BATCH:
                return [types.IpcMessage(header, body)]
            if message.kind != ipc.RECORD_BATCH:
                raise Err(types.ExchangeError_InvalidInput(f"unexpected IPC message kind {message.kind}"))
            batch = run(
                lambda: Batch.from_message(self.schema, message, body),
                types.ExchangeError_InvalidInput,
            )
            return run(
                lambda: messages(self.exchanger.push(batch), self.exchanger.output),
                types.ExchangeError_Failed,
            )

        def finish(self):
            return run(
                lambda: messages(self.exchanger.finish(), self.exchanger.output),
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

            return Session(exchanger, schema, run(opened, types.ExchangeError_Failed))

    return Exchange
