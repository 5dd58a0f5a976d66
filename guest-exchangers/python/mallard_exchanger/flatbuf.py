"""Reading FlatBuffers tables without generated code.

Arrow IPC headers are FlatBuffers. Generated readers need `flatc`, which is
not on PyPI; the handful of tables an exchanger reads (Message, Schema, Field,
RecordBatch) are small, so they are read here slot by slot. Writing uses the
`flatbuffers` package's Builder (see `ipc.py`).

Every read is bounds-checked by `struct.unpack_from`, so a malformed header
raises `struct.error` / `ValueError` (turned into `invalid-input` by the SDK),
never reads outside the buffer.
"""

import struct

_U8 = struct.Struct("<B")
_I16 = struct.Struct("<h")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")


class Table:
    """One table inside a FlatBuffer: `buf` the whole buffer, `pos` the table."""

    __slots__ = ("buf", "pos", "_vtable", "_vsize")

    def __init__(self, buf, pos):
        self.buf = buf
        self.pos = pos
        self._vtable = pos - _I32.unpack_from(buf, pos)[0]
        if self._vtable < 0 or self._vtable + 4 > len(buf):
            raise ValueError("flatbuffer vtable out of bounds")
        self._vsize = _U16.unpack_from(buf, self._vtable)[0]

    @classmethod
    def root(cls, buf):
        """The root table of a FlatBuffer (an Arrow IPC header)."""
        return cls(buf, _U32.unpack_from(buf, 0)[0])

    def _field(self, slot):
        entry = 4 + 2 * slot
        if entry + 2 > self._vsize:
            return 0
        return _U16.unpack_from(self.buf, self._vtable + entry)[0]

    def has(self, slot):
        return self._field(slot) != 0

    def _scalar(self, slot, fmt, default):
        off = self._field(slot)
        return fmt.unpack_from(self.buf, self.pos + off)[0] if off else default

    def u8(self, slot, default=0):
        return self._scalar(slot, _U8, default)

    def i16(self, slot, default=0):
        return self._scalar(slot, _I16, default)

    def i32(self, slot, default=0):
        return self._scalar(slot, _I32, default)

    def i64(self, slot, default=0):
        return self._scalar(slot, _I64, default)

    def bool(self, slot, default=False):
        return bool(self._scalar(slot, _U8, 1 if default else 0))

    def _indirect(self, slot):
        off = self._field(slot)
        if not off:
            return None
        at = self.pos + off
        return at + _U32.unpack_from(self.buf, at)[0]

    def table(self, slot):
        at = self._indirect(slot)
        return None if at is None else Table(self.buf, at)

    def string(self, slot):
        at = self._indirect(slot)
        if at is None:
            return None
        n = _U32.unpack_from(self.buf, at)[0]
        raw = bytes(self.buf[at + 4 : at + 4 + n])
        if len(raw) != n:
            raise ValueError("flatbuffer string out of bounds")
        return raw.decode("utf-8")

    def _vector(self, slot):
        at = self._indirect(slot)
        if at is None:
            return None, 0
        return at + 4, _U32.unpack_from(self.buf, at)[0]

    def tables(self, slot):
        """A vector of tables."""
        start, n = self._vector(slot)
        if start is None:
            return []
        out = []
        for i in range(n):
            at = start + 4 * i
            out.append(Table(self.buf, at + _U32.unpack_from(self.buf, at)[0]))
        return out

    def structs(self, slot, layout):
        """A vector of structs unpacked with `layout` (a `struct.Struct`)."""
        start, n = self._vector(slot)
        if start is None:
            return []
        if start + n * layout.size > len(self.buf):
            raise ValueError("flatbuffer vector out of bounds")
        return [layout.unpack_from(self.buf, start + i * layout.size) for i in range(n)]

    def scalars(self, slot, fmt):
        """A vector of scalars of struct format `fmt` (e.g. '<i')."""
        return [v[0] for v in self.structs(slot, struct.Struct(fmt))]
