"""Arrow IPC headers in pure Python: schemas and record batch headers.

An exchanger sees each message as the host hands it over: the FlatBuffer
`Message` (header) and its body. Columns the exchanger does not touch are
never decoded; their buffers keep their place in the input body, which the
output body reuses (see `batch.py`). Only headers are read and written here.
"""

import struct

import flatbuffers

from .flatbuf import Table

# MessageHeader union tags (Message.fbs).
SCHEMA = 1
DICTIONARY_BATCH = 2
RECORD_BATCH = 3

METADATA_V5 = 4

# Type union tags (Schema.fbs).
NULL, INT, FLOAT, BINARY, UTF8, BOOL, DECIMAL, DATE, TIME, TIMESTAMP = range(1, 11)
INTERVAL, LIST, STRUCT, UNION, FIXED_SIZE_BINARY, FIXED_SIZE_LIST, MAP = range(11, 18)
DURATION, LARGE_BINARY, LARGE_UTF8, LARGE_LIST, RUN_END_ENCODED = range(18, 23)
BINARY_VIEW, UTF8_VIEW, LIST_VIEW, LARGE_LIST_VIEW = range(23, 27)

# The slots of each type's table: (name, kind). Types not listed have none.
_TYPE_SLOTS = {
    INT: (("bitWidth", "i32"), ("is_signed", "bool")),
    FLOAT: (("precision", "i16"),),
    DECIMAL: (("precision", "i32"), ("scale", "i32"), ("bitWidth", "i32")),
    DATE: (("unit", "i16"),),
    TIME: (("unit", "i16"), ("bitWidth", "i32")),
    TIMESTAMP: (("unit", "i16"), ("timezone", "str")),
    INTERVAL: (("unit", "i16"),),
    UNION: (("mode", "i16"), ("typeIds", "[i32]")),
    FIXED_SIZE_BINARY: (("byteWidth", "i32"),),
    FIXED_SIZE_LIST: (("listSize", "i32"),),
    MAP: (("keysSorted", "bool"),),
    DURATION: (("unit", "i16"),),
}

_NAMES = {
    NULL: "null", BINARY: "binary", UTF8: "utf8", BOOL: "bool", LIST: "list",
    STRUCT: "struct", UNION: "union", MAP: "map", LARGE_BINARY: "large_binary",
    LARGE_UTF8: "large_utf8", LARGE_LIST: "large_list", FIXED_SIZE_LIST: "fixed_size_list",
    RUN_END_ENCODED: "run_end_encoded", BINARY_VIEW: "binary_view", UTF8_VIEW: "utf8_view",
    LIST_VIEW: "list_view", LARGE_LIST_VIEW: "large_list_view", INTERVAL: "interval",
    TIME: "time", DURATION: "duration", FIXED_SIZE_BINARY: "fixed_size_binary",
}

_NODE = struct.Struct("<qq")  # FieldNode: length, null_count
_BUFFER = struct.Struct("<qq")  # Buffer: offset, length


class DataType:
    """An Arrow type: its union tag and the values of its table's slots."""

    __slots__ = ("tag", "props")

    def __init__(self, tag, **props):
        self.tag = tag
        self.props = props

    def __eq__(self, other):
        return isinstance(other, DataType) and (self.tag, self.props) == (other.tag, other.props)

    def __hash__(self):
        return hash((self.tag, tuple(sorted(self.props.items()))))

    @property
    def name(self):
        p = self.props
        if self.tag == INT:
            return ("int" if p.get("is_signed") else "uint") + str(p.get("bitWidth"))
        if self.tag == FLOAT:
            return ("float16", "float32", "float64")[p.get("precision", 0)]
        if self.tag == DATE:
            return "date32" if p.get("unit", 1) == 0 else "date64"
        if self.tag == TIMESTAMP:
            unit = ("s", "ms", "us", "ns")[p.get("unit", 0)]
            tz = p.get("timezone")
            return f"timestamp[{unit}" + (f", {tz}]" if tz else "]")
        if self.tag == DECIMAL:
            return f"decimal{p.get('bitWidth', 128)}({p.get('precision')}, {p.get('scale')})"
        return _NAMES.get(self.tag, f"type#{self.tag}")

    def __repr__(self):
        return self.name


def int_type(bits, signed=True):
    return DataType(INT, bitWidth=bits, is_signed=signed)


int8, int16, int32, int64 = (int_type(b) for b in (8, 16, 32, 64))
uint8, uint16, uint32, uint64 = (int_type(b, False) for b in (8, 16, 32, 64))
float32 = DataType(FLOAT, precision=1)
float64 = DataType(FLOAT, precision=2)
bool_ = DataType(BOOL)
utf8 = DataType(UTF8)
binary = DataType(BINARY)
date32 = DataType(DATE, unit=0)


def timestamp(unit="us", tz=None):
    props = {"unit": ("s", "ms", "us", "ns").index(unit)}
    if tz is not None:
        props["timezone"] = tz
    return DataType(TIMESTAMP, **props)


def decimal128(precision, scale):
    return DataType(DECIMAL, precision=precision, scale=scale, bitWidth=128)


class Field:
    """A named column of a schema. `children` and `dictionary` describe nested
    and dictionary-encoded columns; they are carried through untouched."""

    __slots__ = ("name", "type", "nullable", "children", "metadata", "dictionary")

    def __init__(self, name, type, nullable=True, children=(), metadata=None, dictionary=None):
        self.name = name
        self.type = type
        self.nullable = nullable
        self.children = list(children)
        self.metadata = dict(metadata or {})
        self.dictionary = dictionary

    def __eq__(self, other):
        return isinstance(other, Field) and all(
            getattr(self, s) == getattr(other, s) for s in Field.__slots__
        )

    def __repr__(self):
        null = "" if self.nullable else " not null"
        return f"{self.name}: {self.type!r}{null}"


class Schema:
    """The ordered fields of a stream, with the schema's metadata."""

    __slots__ = ("fields", "metadata")

    def __init__(self, fields, metadata=None):
        self.fields = list(fields)
        self.metadata = dict(metadata or {})

    def __iter__(self):
        return iter(self.fields)

    def __len__(self):
        return len(self.fields)

    def __contains__(self, name):
        return any(f.name == name for f in self.fields)

    def index(self, name):
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        raise KeyError(name)

    def field(self, name):
        return self.fields[self.index(name)]

    @property
    def names(self):
        return [f.name for f in self.fields]

    def append(self, field):
        """A new schema with `field` added at the end."""
        return Schema(self.fields + [field], self.metadata)

    def __eq__(self, other):
        return isinstance(other, Schema) and (self.fields, self.metadata) == (
            other.fields,
            other.metadata,
        )

    def __repr__(self):
        return "Schema(" + ", ".join(repr(f) for f in self.fields) + ")"


# ---- reading ---------------------------------------------------------------


def _metadata(table, slot):
    return {kv.string(0): kv.string(1) for kv in table.tables(slot)}


def _read_type(tag, table):
    if not NULL <= tag <= LARGE_LIST_VIEW:
        raise ValueError(f"unknown Arrow type tag {tag}")
    props = {}
    for slot, (name, kind) in enumerate(_TYPE_SLOTS.get(tag, ())):
        if table is None or not table.has(slot):
            continue
        if kind == "i32":
            props[name] = table.i32(slot)
        elif kind == "i16":
            props[name] = table.i16(slot)
        elif kind == "bool":
            props[name] = table.bool(slot)
        elif kind == "str":
            props[name] = table.string(slot)
        else:
            props[name] = tuple(table.scalars(slot, "<i"))
    return DataType(tag, **props)


class Dictionary:
    """How a field is dictionary-encoded (DictionaryEncoding in Schema.fbs)."""

    __slots__ = ("id", "index_type", "ordered", "kind")

    def __init__(self, id, index_type, ordered=False, kind=0):
        self.id = id
        self.index_type = index_type
        self.ordered = ordered
        self.kind = kind

    def __eq__(self, other):
        return isinstance(other, Dictionary) and all(
            getattr(self, s) == getattr(other, s) for s in Dictionary.__slots__
        )


def _read_field(table, depth=0):
    if depth > 64:
        raise ValueError("fields nested deeper than 64 levels")
    dictionary = None
    d = table.table(4)
    if d is not None:
        index = d.table(1)
        dictionary = Dictionary(
            d.i64(0), _read_type(INT, index) if index else int32, d.bool(2), d.i16(3)
        )
    return Field(
        table.string(0) or "",
        _read_type(table.u8(2), table.table(3)),
        table.bool(1),
        [_read_field(c, depth + 1) for c in table.tables(5)],
        _metadata(table, 6),
        dictionary,
    )


class Message:
    """A decoded IPC header: which kind, its table, and the body length."""

    __slots__ = ("kind", "header", "body_length")

    def __init__(self, kind, header, body_length):
        self.kind = kind
        self.header = header
        self.body_length = body_length


def read_message(header_bytes):
    """The `Message` of an IPC header (a flatbuffer, as the WIT carries it)."""
    root = Table.root(header_bytes)
    header = root.table(2)
    if header is None:
        raise ValueError("IPC message without a header")
    return Message(root.u8(1), header, root.i64(3))


def read_schema(header_bytes):
    """The schema of an IPC schema message."""
    message = read_message(header_bytes)
    if message.kind != SCHEMA:
        raise ValueError(f"expected a schema message, got kind {message.kind}")
    table = message.header
    return Schema([_read_field(f) for f in table.tables(1)], _metadata(table, 2))


class BatchHeader:
    """A record batch header: row count, field nodes, buffers, view counts."""

    __slots__ = ("length", "nodes", "buffers", "variadic", "compressed")

    def __init__(self, length, nodes, buffers, variadic=(), compressed=False):
        self.length = length
        self.nodes = nodes
        self.buffers = buffers
        self.variadic = list(variadic)
        self.compressed = compressed


def read_batch_header(message):
    """The record batch header of a decoded RECORD_BATCH message."""
    t = message.header
    return BatchHeader(
        t.i64(0),
        t.structs(1, _NODE),
        t.structs(2, _BUFFER),
        t.scalars(4, "<q"),
        t.has(3),
    )


def layout(field):
    """(nodes, buffers, variadic counts) one column of `field` takes in a batch."""
    if field.dictionary is not None:
        return 1, 2, 0
    tag = field.type.tag
    own = {
        NULL: 0, STRUCT: 1, FIXED_SIZE_LIST: 1, LIST: 2, LARGE_LIST: 2, MAP: 2,
        LIST_VIEW: 3, LARGE_LIST_VIEW: 3, BINARY: 3, UTF8: 3, LARGE_BINARY: 3,
        LARGE_UTF8: 3, RUN_END_ENCODED: 0, BINARY_VIEW: 2, UTF8_VIEW: 2,
    }.get(tag, 2)
    if tag == UNION:
        own = 1 if field.type.props.get("mode", 0) == 0 else 2
    nodes, buffers, variadic = 1, own, 1 if tag in (BINARY_VIEW, UTF8_VIEW) else 0
    for child in field.children:
        n, b, v = layout(child)
        nodes, buffers, variadic = nodes + n, buffers + b, variadic + v
    return nodes, buffers, variadic


# ---- writing ---------------------------------------------------------------


def _write_metadata(b, metadata):
    if not metadata:
        return None
    entries = []
    for key, value in metadata.items():
        k, v = b.CreateString(key), b.CreateString(value)
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, k, 0)
        b.PrependUOffsetTRelativeSlot(1, v, 0)
        entries.append(b.EndObject())
    return _offsets(b, entries)


def _offsets(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _write_type(b, data_type):
    slots = _TYPE_SLOTS.get(data_type.tag, ())
    refs = {}
    for name, kind in slots:
        value = data_type.props.get(name)
        if value is None:
            continue
        if kind == "str":
            refs[name] = b.CreateString(value)
        elif kind == "[i32]":
            b.StartVector(4, len(value), 4)
            for v in reversed(value):
                b.PrependInt32(v)
            refs[name] = b.EndVector()
    b.StartObject(len(slots))
    for slot, (name, kind) in enumerate(slots):
        value = data_type.props.get(name)
        if value is None:
            continue
        if kind == "i32":
            b.PrependInt32Slot(slot, value, 0)
        elif kind == "i16":
            b.PrependInt16Slot(slot, value, 0)
        elif kind == "bool":
            b.PrependBoolSlot(slot, value, False)
        else:
            b.PrependUOffsetTRelativeSlot(slot, refs[name], 0)
    return b.EndObject()


def _write_field(b, field):
    name = b.CreateString(field.name)
    type_table = _write_type(b, field.type)
    dictionary = None
    if field.dictionary is not None:
        d = field.dictionary
        index = _write_type(b, d.index_type)
        b.StartObject(4)
        b.PrependInt64Slot(0, d.id, 0)
        b.PrependUOffsetTRelativeSlot(1, index, 0)
        b.PrependBoolSlot(2, d.ordered, False)
        b.PrependInt16Slot(3, d.kind, 0)
        dictionary = b.EndObject()
    children = _offsets(b, [_write_field(b, c) for c in field.children])
    metadata = _write_metadata(b, field.metadata)
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependBoolSlot(1, field.nullable, False)
    b.PrependUint8Slot(2, field.type.tag, 0)
    b.PrependUOffsetTRelativeSlot(3, type_table, 0)
    if dictionary is not None:
        b.PrependUOffsetTRelativeSlot(4, dictionary, 0)
    b.PrependUOffsetTRelativeSlot(5, children, 0)
    if metadata is not None:
        b.PrependUOffsetTRelativeSlot(6, metadata, 0)
    return b.EndObject()


def _message(b, kind, header, body_length):
    b.StartObject(5)
    b.PrependInt16Slot(0, METADATA_V5, 0)
    b.PrependUint8Slot(1, kind, 0)
    b.PrependUOffsetTRelativeSlot(2, header, 0)
    b.PrependInt64Slot(3, body_length, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


def write_schema(schema):
    """The IPC schema message header of `schema`."""
    b = flatbuffers.Builder(256)
    b.ForceDefaults(True)
    fields = _offsets(b, [_write_field(b, f) for f in schema.fields])
    metadata = _write_metadata(b, schema.metadata)
    b.StartObject(4)
    b.PrependInt16Slot(0, 0, 0)
    b.PrependUOffsetTRelativeSlot(1, fields, 0)
    if metadata is not None:
        b.PrependUOffsetTRelativeSlot(2, metadata, 0)
    return _message(b, SCHEMA, b.EndObject(), 0)


def _structs(b, pairs):
    b.StartVector(16, len(pairs), 8)
    for first, second in reversed(pairs):
        b.Prep(8, 16)
        b.PrependInt64(second)
        b.PrependInt64(first)
    return b.EndVector()


def write_batch_header(header, body_length):
    """The IPC record batch message header of `header` (a `BatchHeader`)."""
    b = flatbuffers.Builder(64 + 32 * (len(header.nodes) + len(header.buffers)))
    b.ForceDefaults(True)
    nodes = _structs(b, header.nodes)
    buffers = _structs(b, header.buffers)
    variadic = None
    if header.variadic:
        b.StartVector(8, len(header.variadic), 8)
        for v in reversed(header.variadic):
            b.PrependInt64(v)
        variadic = b.EndVector()
    b.StartObject(5)
    b.PrependInt64Slot(0, header.length, 0)
    b.PrependUOffsetTRelativeSlot(1, nodes, 0)
    b.PrependUOffsetTRelativeSlot(2, buffers, 0)
    if variadic is not None:
        b.PrependUOffsetTRelativeSlot(4, variadic, 0)
    return _message(b, RECORD_BATCH, b.EndObject(), body_length)
