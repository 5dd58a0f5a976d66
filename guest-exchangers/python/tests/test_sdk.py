"""Unit tests of the Python SDK's IPC codec and columns, checked against
pyarrow (which reads what the SDK writes and writes what it reads). Run by
`host/tests/polyglot.rs` with pyarrow installed into a cache."""

import datetime
import decimal
import struct
import sys
import unittest
from array import array
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mallard_exchanger import Batch, Column, Field, Schema, bool_, float64, int64, ipc, utf8  # noqa: E402


def messages(table_or_batch):
    """The (header, body) of each IPC message pyarrow writes for a batch."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table_or_batch.schema) as writer:
        writer.write(table_or_batch)
    reader = pa.BufferReader(sink.getvalue())
    out = []
    while True:
        try:
            message = pa.ipc.read_message(reader)
        except (StopIteration, EOFError):
            break
        body = message.body.to_pybytes() if message.body is not None else b""
        out.append((message.metadata.to_pybytes(), body))
    return out


def to_stream(pairs):
    """An IPC stream of (header, body) pairs, for pyarrow to read."""
    out = bytearray()
    for header, body in pairs:
        pad = -len(header) % 8
        out += b"\xff\xff\xff\xff" + struct.pack("<i", len(header) + pad) + header + bytes(pad) + body
    return bytes(out + b"\xff\xff\xff\xff\x00\x00\x00\x00")


def flights(n):
    return pa.record_batch(
        {
            "flight_id": pa.array(range(n), pa.int64()),
            "carrier": pa.array([None if i % 7 == 0 else f"C{i % 5}" for i in range(n)], pa.utf8()),
            "passengers": pa.array([None if i % 11 == 0 else i % 300 for i in range(n)], pa.int32()),
            "distance": pa.array([i * 1.5 for i in range(n)], pa.float64()),
            "cancelled": pa.array([i % 3 == 0 for i in range(n)], pa.bool_()),
            "day": pa.array([datetime.date(2024, 1, 1 + i % 28) for i in range(n)], pa.date32()),
            "departs": pa.array([1_700_000_000_000_000 + i for i in range(n)], pa.timestamp("us", "UTC")),
            "fare": pa.array([decimal.Decimal(f"{i}.25") for i in range(n)], pa.decimal128(10, 2)),
            "tags": pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int16())),
        },
        metadata={"source": "test"},
    )


class SchemaTests(unittest.TestCase):
    def test_a_schema_survives_a_round_trip_through_pyarrow(self):
        batch = flights(3)
        header, _ = messages(batch)[0]
        schema = ipc.read_schema(header)
        self.assertEqual(schema.names, batch.schema.names)
        self.assertEqual(schema.field("fare").type.name, "decimal128(10, 2)")
        self.assertEqual(schema.field("departs").type.name, "timestamp[us, UTC]")
        self.assertEqual(schema.metadata, {"source": "test"})
        again = pa.ipc.read_schema(pa.py_buffer(to_stream([(ipc.write_schema(schema), b"")])))
        self.assertTrue(again.equals(batch.schema, check_metadata=True), again)

    def test_appended_fields_are_what_pyarrow_expects(self):
        schema = ipc.read_schema(messages(flights(1))[0][0])
        out = schema.append(Field("processed", bool_, nullable=False))
        read = pa.ipc.read_schema(pa.py_buffer(to_stream([(ipc.write_schema(out), b"")])))
        self.assertEqual(read.field("processed").type, pa.bool_())
        self.assertFalse(read.field("processed").nullable)

    def test_a_malformed_header_raises_instead_of_reading_past_it(self):
        header, _ = messages(flights(1))[0]
        for cut in (0, 3, 11, len(header) // 2):
            with self.assertRaises((ValueError, struct.error)):
                ipc.read_schema(header[:cut])


class BatchTests(unittest.TestCase):
    def setUp(self):
        self.batch = flights(1000)
        (self.schema_header, _), (self.header, self.body) = messages(self.batch)
        self.schema = ipc.read_schema(self.schema_header)

    def decoded(self):
        return Batch.from_message(self.schema, ipc.read_message(self.header), self.body)

    def test_columns_read_as_pyarrow_reads_them(self):
        batch = self.decoded()
        self.assertEqual(batch.num_rows, 1000)
        for name in ("flight_id", "carrier", "passengers", "distance", "cancelled"):
            self.assertEqual(batch.column(name).to_pylist(), self.batch.column(name).to_pylist(), name)
        self.assertEqual(batch.column("day").to_pylist()[:2], [19723, 19724])
        fares = batch.column("fare").to_pylist()
        self.assertEqual(fares[3], 325)
        self.assertEqual(batch.column("passengers").null_count, self.batch.column("passengers").null_count)

    def test_pass_through_columns_and_built_ones_are_read_back_by_pyarrow(self):
        batch = self.decoded()
        n = batch.num_rows
        out = batch.append(Field("processed", bool_, False), Column.constant(bool_, True, n))
        out = out.append("label", Column.constant(utf8, "x", n))
        out = out.append("nothing", Column.constant(int64, None, n))
        out = out.append("half", Column.from_values(float64, array("d", [i / 2 for i in range(n)])))
        out = out.append("names", Column.from_pylist(utf8, [None if i % 2 else str(i) for i in range(n)]))
        header, body = out.encode()
        stream = to_stream([(ipc.write_schema(out.schema), b""), (header, body)])
        read = pa.ipc.open_stream(stream).read_next_batch()
        read.validate(full=True)
        for name in self.batch.schema.names:
            self.assertEqual(read.column(name), self.batch.column(name), name)
        self.assertEqual(read.column("processed").to_pylist(), [True] * n)
        self.assertEqual(read.column("label").to_pylist(), ["x"] * n)
        self.assertEqual(read.column("nothing").null_count, n)
        self.assertEqual(read.column("half").to_pylist()[3], 1.5)
        self.assertEqual(read.column("names").to_pylist()[:3], ["0", None, "2"])

    def test_columns_read_on_demand_are_fetched_once_and_only_when_touched(self):
        fetched = []

        def read(k):
            fetched.append(k)
            one = pa.record_batch([self.batch.column(k)], names=[self.batch.schema.names[k]])
            return messages(one)[1]

        batch = Batch.from_message(self.schema, ipc.read_message(self.header), b"", read)
        n = batch.num_rows
        self.assertEqual(batch.column("carrier").null_count, self.batch.column("carrier").null_count)
        self.assertEqual(fetched, [], "row and null counts come from the header")
        self.assertEqual(batch.column("carrier").to_pylist(), self.batch.column("carrier").to_pylist())
        batch.column("carrier").to_pylist()
        self.assertEqual(fetched, [1], "fetched once")
        out = batch.append(Field("processed", bool_, False), Column.constant(bool_, True, n))
        self.assertEqual(fetched, [1], "appending fetches nothing")
        header, body = out.encode()
        self.assertEqual(sorted(fetched), list(range(len(self.batch.schema))), "encoding needs them all")
        stream = to_stream([(ipc.write_schema(out.schema), b""), (header, body)])
        got = pa.ipc.open_stream(stream).read_next_batch()
        got.validate(full=True)
        for name in self.batch.schema.names:
            self.assertEqual(got.column(name), self.batch.column(name), name)

    def test_select_keeps_only_the_named_columns(self):
        out = self.decoded().select(["distance", "flight_id"])
        header, body = out.encode()
        read = pa.ipc.open_stream(to_stream([(ipc.write_schema(out.schema), b""), (header, body)])).read_next_batch()
        self.assertEqual(read.schema.names, ["distance", "flight_id"])
        self.assertEqual(read.column("flight_id"), self.batch.column("flight_id"))

    def test_a_header_that_lies_about_its_buffers_is_refused(self):
        short = Schema(self.schema.fields + [Field("extra", int64)])
        with self.assertRaises(ValueError):
            Batch.from_message(short, ipc.read_message(self.header), self.body)
        batch = Batch.from_message(self.schema, ipc.read_message(self.header), self.body[:64])
        with self.assertRaises(ValueError):
            batch.column("distance").values()

    def test_columns_of_different_lengths_make_no_batch(self):
        with self.assertRaises(ValueError):
            self.decoded().append("short", Column.constant(int64, 1, 5))


if __name__ == "__main__":
    unittest.main()
