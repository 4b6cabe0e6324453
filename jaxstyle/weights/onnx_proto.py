"""The initializers (stored tensors) of an ONNX model, read without the ``onnx`` package.

An ONNX file is one protobuf ``ModelProto``. Only the few fields on the path to the stored
tensors are decoded, straight from the wire format:

* ``ModelProto.graph`` = 7 -> ``GraphProto.initializer`` = 5 (repeated ``TensorProto``);
* ``TensorProto``: ``dims`` = 1 (int64, packed or not), ``data_type`` = 2, ``float_data`` = 4,
  ``int32_data`` = 5, ``string_data`` = 6, ``int64_data`` = 7, ``name`` = 8, ``raw_data`` = 9,
  ``double_data`` = 10, ``uint64_data`` = 11, ``data_location`` = 14.

Every other field is skipped by its wire type. ``raw_data`` is little-endian whatever the
machine. Tensors whose bytes live in a separate file (ONNX "external data") are refused: the
reader never opens files other than the one it was given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# TensorProto.DataType -> numpy dtype of its raw_data (little-endian).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # FLOAT
    2: np.dtype("u1"),  # UINT8
    3: np.dtype("i1"),  # INT8
    4: np.dtype("<u2"),  # UINT16
    5: np.dtype("<i2"),  # INT16
    6: np.dtype("<i4"),  # INT32
    7: np.dtype("<i8"),  # INT64
    9: np.dtype("?"),  # BOOL
    10: np.dtype("<f2"),  # FLOAT16
    11: np.dtype("<f8"),  # DOUBLE
    12: np.dtype("<u4"),  # UINT32
    13: np.dtype("<u8"),  # UINT64
}
STRING = 8
DTYPE_NAMES = {
    0: "UNDEFINED",
    14: "COMPLEX64",
    15: "COMPLEX128",
    16: "BFLOAT16",
}
# Which repeated field holds the values when raw_data is absent, and how each element is coded.
_TYPED_FIELD = {1: 4, 11: 10, 7: 7, 12: 11, 13: 11}  # else int32_data (5), as ONNX specifies
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class OnnxFormatError(ValueError):
    """A file that is not a readable ONNX model, or a tensor this reader cannot decode."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint longer than 10 bytes")


def _fields(buf: memoryview):
    """Yields ``(field number, wire type, value)``; value is an int or a memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise OnnxFormatError(f"field {field}: {size} bytes announced, {end - pos} left")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise OnnxFormatError(f"field {field}: truncated fixed-size value")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise OnnxFormatError(f"field {field}: unsupported wire type {wire}")
        yield field, wire, value


def _signed(v: int, bits: int = 64) -> int:
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


class _Repeated:
    """The values of one repeated numeric field, whether packed or not."""

    def __init__(self) -> None:
        self.varints: list[int] = []
        self.fixed: list[memoryview] = []

    def add(self, wire: int, value, packed_fixed: bool) -> None:
        if wire == _VARINT:
            self.varints.append(value)
        elif wire in (_FIXED32, _FIXED64) or packed_fixed:  # one value, or a packed run of them
            self.fixed.append(value)
        else:  # a packed run of varints
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                self.varints.append(v)


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    """Decodes one TensorProto into ``(name, array)``."""
    dims, data_type, name, raw, external = _Repeated(), 0, "", None, False
    values: dict[int, _Repeated] = {f: _Repeated() for f in (4, 5, 7, 10, 11)}
    strings: list[bytes] = []
    for field, wire, value in _fields(buf):
        if field == 1:
            dims.add(wire, value, packed_fixed=False)
        elif field == 2 and wire == _VARINT:
            data_type = value
        elif field == 8 and wire == _LEN:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 9 and wire == _LEN:
            raw = value
        elif field == 6 and wire == _LEN:
            strings.append(bytes(value))
        elif field in values:
            values[field].add(wire, value, packed_fixed=field in (4, 10))
        elif field == 14 and wire == _VARINT:
            external = value == 1  # DataLocation.EXTERNAL, the test onnx itself applies
    label = name or "<unnamed>"
    if external:
        raise OnnxFormatError(
            f"tensor {label} keeps its data in an external file, which this reader does not "
            "open; save the model with its data inside (onnx.save(model, path, "
            "save_as_external_data=False))"
        )
    shape = tuple(_signed(d) for d in dims.varints)
    if any(d < 0 for d in shape):
        raise OnnxFormatError(f"tensor {label} has negative dimensions {shape}")
    return name, _values(label, data_type, shape, raw, values, strings)


def _values(label, data_type, shape, raw, values, strings) -> np.ndarray:
    if data_type == STRING:  # as the onnx package gives them: str objects, from UTF-8
        return np.array([b.decode("utf-8", "replace") for b in strings], object).reshape(shape)
    dtype = DTYPES.get(data_type)
    if dtype is None:
        kind = DTYPE_NAMES.get(data_type, f"type {data_type}")
        raise OnnxFormatError(f"tensor {label}: data type {kind} is not supported")
    count = int(np.prod(shape, dtype=np.int64))
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise OnnxFormatError(
                f"tensor {label}: {len(raw)} bytes of data for shape {shape} of {dtype}"
            )
        arr = np.frombuffer(raw, dtype=dtype)
    else:
        field = _TYPED_FIELD.get(data_type, 5)
        rep = values[field]
        if field in (4, 10):  # float_data / double_data: fixed-size little-endian values
            arr = np.frombuffer(b"".join(rep.fixed), "<f4" if field == 4 else "<f8")
        elif data_type == 10:  # float16 bits stored in int32_data
            arr = np.array(rep.varints, np.uint16).view("<f2")
        elif field == 11:  # uint64_data
            arr = np.array(rep.varints, np.uint64)
        else:  # int32_data / int64_data: varints, negative ones as 64-bit two's complement
            arr = np.array([_signed(v) for v in rep.varints], np.int64)
        if arr.size != count:
            raise OnnxFormatError(f"tensor {label}: {arr.size} values for shape {shape}")
    # A copy that owns its memory, in native byte order: the file's buffer can then be freed.
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """Every initializer of the ONNX model at ``path``, by name, as numpy arrays.

    Raises:
        OnnxFormatError: not a protobuf ModelProto with a graph, a truncated file, a tensor
            whose data is in an external file, or a data type numpy cannot hold.
        OSError: the file cannot be read.
    """
    buf = memoryview(Path(path).read_bytes())
    graphs = [v for f, w, v in _fields(buf) if f == 7 and w == _LEN]
    if not graphs:
        raise OnnxFormatError("no graph in the file (not an ONNX model)")
    # A message field given twice is merged, which for the bytes is their concatenation.
    graph = graphs[0] if len(graphs) == 1 else memoryview(b"".join(graphs))
    out: dict[str, np.ndarray] = {}
    for field, wire, value in _fields(graph):
        if field == 5 and wire == _LEN:
            name, arr = _tensor(value)
            out[name] = arr
    return out
