"""`running_totals` in Python: appends `running_total`, the cumulative sum of
a numeric column over the stream so far, optionally per utf8 `key`. Nulls add
nothing; integer inputs give an int64 total, floats a float64."""

from array import array
from itertools import accumulate

from mallard_exchanger import (
    Column, Exchanger, Field, InvalidInput, InvalidParams, Schema, export, float64, int64,
)

INTEGERS = {"int8", "int16", "int32", "int64"}
FLOATS = {"float32", "float64"}


class RunningTotals(Exchanger):
    name, version = "running_totals", "1.0.0"
    description = "appends `running_total`: cumulative sum of `value` (per `key` if given)"

    def open(self, schema, params):
        self.value = params.get("value", "passengers")
        if self.value not in schema:
            raise InvalidParams(f"no column `{self.value}`")
        kind = schema.field(self.value).type.name
        if kind not in INTEGERS | FLOATS:
            raise InvalidInput(f"column `{self.value}` is {kind}, expected an integer or float column")
        self.float = kind in FLOATS
        self.key = params.get("key")
        if self.key is not None:
            if self.key not in schema:
                raise InvalidParams(f"no column `{self.key}`")
            if schema.field(self.key).type.name != "utf8":
                raise InvalidInput(f"key `{self.key}` must be utf8")
        self.zero = 0.0 if self.float else 0
        self.total, self.by_key = self.zero, {}
        total = Field("running_total", float64 if self.float else int64, nullable=False)
        return Schema(schema.fields + [total])

    def push(self, batch):
        column = batch.column(self.value)
        values = column.values() if column.null_count == 0 else [
            self.zero if v is None else v for v in column.to_pylist()
        ]
        if self.key is None:
            totals = array("d" if self.float else "q", accumulate(values, initial=self.total))
            del totals[0]
            if totals:
                self.total = totals[-1]
        else:
            by_key, out = self.by_key, []
            for key, value in zip(batch.column(self.key).binaries(), values):
                if key is not None:
                    value += by_key.get(key, self.zero)
                    by_key[key] = value
                out.append(value)
            totals = array("d" if self.float else "q", out)
        return [batch.append(self.output.fields[-1], Column.from_values(self.output.fields[-1].type, totals))]


Exchange = export(RunningTotals)
