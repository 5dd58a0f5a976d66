"""Record batches as an exchanger sees them: named columns, read on demand.

A column taken from the input is a view into the input body; nothing is
decoded until it is read, and a column passed to the output untouched is
never copied by Python code (the output body reuses the input body). New
columns are built from `array.array`s, memoryviews or Python lists.
"""

import array

from . import ipc

# struct format of each fixed-width type's values.
_FORMATS = {
    "int8": "b", "int16": "h", "int32": "i", "int64": "q",
    "uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q",
    "float32": "f", "float64": "d", "date32": "i", "date64": "q",
}


def _format(data_type):
    name = data_type.name
    if name in _FORMATS:
        return _FORMATS[name]
    if data_type.tag in (ipc.TIMESTAMP, ipc.DURATION):
        return "q"
    if data_type.tag == ipc.TIME:
        return "i" if data_type.props.get("bitWidth") == 32 else "q"
    return None


def _pack_bits(flags, length):
    """A little-endian bitmap of `length` truthy/falsy flags."""
    if length == 0:
        return b""
    bits = "".join("1" if f else "0" for f in reversed(flags))
    return int(bits, 2).to_bytes((length + 7) // 8, "little")


def _bit(bitmap, i):
    return (bitmap[i >> 3] >> (i & 7)) & 1


class Column:
    """One top-level column: its type, length, null count and buffers.

    Buffers are either `(offset, length)` regions of `source` (the input
    body) or bytes-like objects the exchanger built. An input column whose
    buffers the host has not sent yet (contract 0.2's input on demand) has a
    `reader` that fetches them the first time they are needed; a column that is
    only passed through is never fetched.
    """

    __slots__ = ("type", "nodes", "_parts", "_variadic", "_source", "_reader")

    def __init__(self, data_type, nodes, parts, variadic=(), source=None, reader=None):
        self.type = data_type
        self.nodes = nodes
        self._parts = parts
        self._variadic = list(variadic)
        self._source = source
        self._reader = reader

    def _load(self):
        if self._reader is not None:
            reader, self._reader = self._reader, None
            self._parts, variadic, self._source = reader()
            self._variadic = list(variadic)

    @property
    def parts(self):
        self._load()
        return self._parts

    @property
    def variadic(self):
        self._load()
        return self._variadic

    @property
    def source(self):
        self._load()
        return self._source

    @property
    def length(self):
        return self.nodes[0][0]

    def __len__(self):
        return self.length

    @property
    def null_count(self):
        return self.nodes[0][1]

    def buffer(self, i):
        """Buffer `i` as a memoryview (validity is 0, values or offsets 1, ...)."""
        part = self.parts[i]
        if isinstance(part, tuple):
            offset, length = part
            view = self.source[offset : offset + length]
            if len(view) != length:
                raise ValueError("a buffer lies outside the batch body")
            return view
        return memoryview(part)

    def validity(self):
        """The validity bitmap, or None when no value is null."""
        if self.null_count == 0 or not self.parts:
            return None
        return self.buffer(0)

    def is_valid(self, i):
        bitmap = self.validity()
        return bitmap is None or bool(_bit(bitmap, i))

    def values(self):
        """The values of a fixed-width column as a typed memoryview (nulls hold
        arbitrary values; see `validity`)."""
        fmt = _format(self.type)
        if fmt is None:
            raise TypeError(f"{self.type.name} has no fixed-width values view")
        size = array.array(fmt).itemsize
        raw = self.buffer(1)
        if len(raw) < self.length * size:
            raise ValueError("values buffer shorter than the column")
        return raw[: self.length * size].cast(fmt)

    def _offsets(self):
        fmt = "q" if self.type.tag in (ipc.LARGE_UTF8, ipc.LARGE_BINARY) else "i"
        size = array.array(fmt).itemsize
        raw = self.buffer(1)
        if len(raw) < (self.length + 1) * size:
            raise ValueError("offsets buffer shorter than the column")
        return raw[: (self.length + 1) * size].cast(fmt)

    def binaries(self):
        """The values of a utf8/binary column as a list of `bytes` (None for nulls)."""
        offsets, data = self._offsets(), bytes(self.buffer(2))
        bitmap = self.validity()
        out = [data[offsets[i] : offsets[i + 1]] for i in range(self.length)]
        if bitmap is not None:
            for i in range(self.length):
                if not _bit(bitmap, i):
                    out[i] = None
        return out

    def to_pylist(self):
        """Every value as a Python object: int, float, bool, str, bytes or None.
        Dates, times and timestamps are their integer counts; decimals their
        unscaled integers."""
        tag, n = self.type.tag, self.length
        if tag == ipc.NULL:
            return [None] * n
        if tag in (ipc.UTF8, ipc.LARGE_UTF8):
            return [None if b is None else b.decode("utf-8") for b in self.binaries()]
        if tag in (ipc.BINARY, ipc.LARGE_BINARY):
            return self.binaries()
        if tag == ipc.BOOL:
            raw = self.buffer(1)
            out = [bool(_bit(raw, i)) for i in range(n)]
        elif tag == ipc.DECIMAL and self.type.props.get("bitWidth", 128) == 128:
            raw = bytes(self.buffer(1))
            out = [int.from_bytes(raw[16 * i : 16 * i + 16], "little", signed=True) for i in range(n)]
        else:
            out = self.values().tolist()
        bitmap = self.validity()
        if bitmap is not None:
            for i in range(n):
                if not _bit(bitmap, i):
                    out[i] = None
        return out

    # ---- building -------------------------------------------------------

    @classmethod
    def constant(cls, data_type, value, length):
        """`length` copies of `value` (None for all nulls)."""
        if value is None:
            if data_type.tag == ipc.NULL:
                return cls(data_type, [(length, length)], [])
            return cls.from_pylist(data_type, [None] * length)
        if data_type.tag == ipc.BOOL:
            fill = b"\xff" if value else b"\x00"
            return cls(data_type, [(length, 0)], [b"", fill * ((length + 7) // 8)])
        if data_type.tag in (ipc.UTF8, ipc.BINARY):
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            offsets = array.array("i", range(0, len(raw) * (length + 1), len(raw) or 1))
            if not raw:
                offsets = array.array("i", bytes(4 * (length + 1)))
            return cls(data_type, [(length, 0)], [b"", offsets, raw * length])
        fmt = _format(data_type)
        if fmt is None:
            raise TypeError(f"no constant columns of {data_type.name}")
        return cls(data_type, [(length, 0)], [b"", array.array(fmt, [value]) * length])

    @classmethod
    def from_values(cls, data_type, values, validity=None):
        """A fixed-width column from an `array.array`/memoryview of values and an
        optional list of validity flags."""
        fmt = _format(data_type)
        if fmt is None:
            raise TypeError(f"{data_type.name} is not fixed-width; use from_pylist")
        if not isinstance(values, array.array) or values.typecode != fmt:
            values = array.array(fmt, values)
        n = len(values)
        if validity is None:
            return cls(data_type, [(n, 0)], [b"", values])
        nulls = n - sum(1 for v in validity if v)
        return cls(data_type, [(n, nulls)], [_pack_bits(validity, n), values])

    @classmethod
    def from_pylist(cls, data_type, items):
        """A column from Python values (None for nulls)."""
        n = len(items)
        valid = [v is not None for v in items]
        nulls = n - sum(valid)
        validity = _pack_bits(valid, n) if nulls else b""
        tag = data_type.tag
        if tag == ipc.BOOL:
            return cls(data_type, [(n, nulls)], [validity, _pack_bits(items, n)])
        if tag in (ipc.UTF8, ipc.BINARY):
            raw = [b"" if v is None else v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in items]
            offsets = array.array("i", [0])
            total = 0
            for r in raw:
                total += len(r)
                offsets.append(total)
            return cls(data_type, [(n, nulls)], [validity, offsets, b"".join(raw)])
        fmt = _format(data_type)
        if fmt is None:
            raise TypeError(f"no columns of {data_type.name} from Python values")
        values = array.array(fmt, [0 if v is None else v for v in items])
        return cls(data_type, [(n, nulls)], [validity, values])


class Batch:
    """A record batch: a schema and one column per field, all of one length."""

    __slots__ = ("schema", "columns", "num_rows")

    def __init__(self, schema, columns, num_rows=None):
        if len(schema.fields) != len(columns):
            raise ValueError(f"{len(schema.fields)} fields but {len(columns)} columns")
        if num_rows is None:
            num_rows = columns[0].length if columns else 0
        for field, column in zip(schema.fields, columns):
            if column.length != num_rows:
                raise ValueError(
                    f"column {field.name!r} has {column.length} rows, the batch {num_rows}"
                )
        self.schema = schema
        self.columns = list(columns)
        self.num_rows = num_rows

    def __len__(self):
        return self.num_rows

    def column(self, key):
        """A column by name or position."""
        return self.columns[key if isinstance(key, int) else self.schema.index(key)]

    def append(self, field, column):
        """A new batch with `column` added at the end as `field` (a `Field`, or a
        name for a nullable field of the column's type)."""
        if isinstance(field, str):
            field = ipc.Field(field, column.type, True)
        return Batch(self.schema.append(field), self.columns + [column], self.num_rows)

    def select(self, names):
        """A new batch of the named columns, in that order."""
        fields = [self.schema.field(n) for n in names]
        return Batch(ipc.Schema(fields, self.schema.metadata), [self.column(n) for n in names], self.num_rows)

    @classmethod
    def from_message(cls, schema, message, body, read=None):
        """The batch an IPC record batch message carries (nothing decoded yet).
        With `read` (input on demand: `body` is empty), column k's buffers are
        `read(k)`'s, fetched the first time they are needed."""
        header = ipc.read_batch_header(message)
        if header.compressed:
            raise ValueError("compressed record batches are not supported; send them uncompressed")
        source = memoryview(body)
        nodes, buffers, variadic = header.nodes, header.buffers, header.variadic
        columns = []
        n = b = v = 0
        for k, field in enumerate(schema.fields):
            dn, db, dv = ipc.layout(field)
            if n + dn > len(nodes) or b + db > len(buffers) or v + dv > len(variadic):
                raise ValueError("record batch header has fewer nodes or buffers than its schema")
            counts = variadic[v : v + dv]
            parts = list(buffers[b : b + db + sum(counts)])
            reader = None if read is None else (lambda k=k: _read_column(read, k))
            columns.append(Column(field.type, nodes[n : n + dn], parts, counts, source, reader))
            n, b, v = n + dn, b + db + sum(counts), v + dv
        return cls(schema, columns, header.length)

    def encode(self):
        """The IPC (header, body) of this batch. Input bodies referenced by
        pass-through columns are placed once; built buffers follow, 8-aligned."""
        pieces, size = [], 0
        bases = {}

        def place(data):
            nonlocal size
            offset = size
            pieces.append(data)
            size += len(data)
            pad = -size % 8
            if pad:
                pieces.append(bytes(pad))
                size += pad
            return offset

        nodes, buffers, variadic = [], [], []
        for column in self.columns:
            nodes.extend(column.nodes)
            variadic.extend(column.variadic)
            for part in column.parts:
                if isinstance(part, tuple):
                    key = id(column.source)
                    if key not in bases:
                        bases[key] = place(column.source)
                    buffers.append((bases[key] + part[0], part[1]))
                else:
                    data = memoryview(part).cast("B") if not isinstance(part, bytes) else part
                    buffers.append((place(data) if len(data) else size, len(data)))
        header = ipc.write_batch_header(
            ipc.BatchHeader(self.num_rows, nodes, buffers, variadic), size
        )
        return header, b"".join(pieces)


def _read_column(read, k):
    """(parts, variadic counts, source) of input column `k`, from the one-column
    record batch message `read(k)` returns as (header, body)."""
    header, body = read(k)
    batch = ipc.read_batch_header(ipc.read_message(header))
    if batch.compressed:
        raise ValueError("the host sent a compressed column")
    return list(batch.buffers), batch.variadic, memoryview(body)
