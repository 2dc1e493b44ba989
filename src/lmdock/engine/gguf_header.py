"""A fast GGUF header reader: key/values and tensor infos without materialising token arrays.

`gguf.GGUFReader` builds numpy arrays for every tokenizer string and takes seconds per file; listing a
store must be instant. This walks the header (GGUF v2/v3, little-endian) over an mmap, keeps scalar
values, records array lengths, and checks that the tensor data fits in the file, so a truncated
download is reported before llama.cpp ever sees it.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

_MAGIC = b"GGUF"
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_DEFAULT_ALIGNMENT = 32
_MAX_ARRAY_DEPTH = 8


class GGUFFormatError(ValueError):
    """The file is not a GGUF this reader understands, or it is cut short."""


@dataclass
class GGUFHeader:
    kv: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    n_tensors: int = 0
    n_params: int = 0
    tensor_bytes: int = 0
    required_size: int = 0  # bytes the file must have for all tensor data to be present


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GGUFFormatError("file is truncated: the header is cut short")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise GGUFFormatError("file is truncated: the header is cut short")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.unpack("<Q")  # read first: `self.pos += ...` would add to the old position
        if self.pos + n > len(self.buf):
            raise GGUFFormatError("file is truncated: the header is cut short")
        self.pos += n

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        fmt = _SCALARS.get(vtype)
        if fmt is None:
            raise GGUFFormatError(f"unknown value type {vtype}")
        return self.unpack(fmt)

    def skip_array(self, depth: int = 0) -> int:
        """Skip an array value; returns its length. Arrays nest at most `_MAX_ARRAY_DEPTH` deep."""
        if depth > _MAX_ARRAY_DEPTH:
            raise GGUFFormatError(f"arrays nested more than {_MAX_ARRAY_DEPTH} levels deep")
        etype, count = self.unpack("<I"), self.unpack("<Q")
        remaining = len(self.buf) - self.pos
        if etype == _STRING:
            if count * 8 > remaining:
                raise GGUFFormatError("file is truncated: the header is cut short")
            for _ in range(count):
                self.skip_string()
        elif etype == _ARRAY:
            if count * 12 > remaining:
                raise GGUFFormatError("file is truncated: the header is cut short")
            for _ in range(count):
                self.skip_array(depth + 1)
        elif etype in _SCALARS:
            self.pos += count * struct.calcsize(_SCALARS[etype])
        else:
            raise GGUFFormatError(f"unknown array element type {etype}")
        if self.pos > len(self.buf):
            raise GGUFFormatError("file is truncated: the header is cut short")
        return count


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse a GGUF file's header; raises GGUFFormatError (or OSError) on anything unexpected."""
    with path.open("rb") as f:
        size = path.stat().st_size
        if size < 24:
            raise GGUFFormatError(f"file is too small to be a GGUF ({size} bytes)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(_Cursor(buf), size)


def _parse(cur: _Cursor, file_size: int) -> GGUFHeader:
    if cur.buf[:4] != _MAGIC:
        raise GGUFFormatError("missing GGUF magic bytes")
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in (2, 3):
        raise GGUFFormatError(f"unsupported GGUF version {version} (big-endian or too old?)")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    if n_kv * 12 > file_size or n_tensors * 24 > file_size:
        raise GGUFFormatError(f"implausible header: {n_kv} key/values and {n_tensors} tensors")
    header = GGUFHeader(n_tensors=n_tensors)
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.unpack("<I")
        if vtype == _ARRAY:
            header.array_lengths[key] = cur.skip_array()
        else:
            header.kv[key] = cur.value(vtype)
    data_end = 0
    for _ in range(n_tensors):
        cur.skip_string()
        n_dims = cur.unpack("<I")
        if n_dims > 8:
            raise GGUFFormatError(f"a tensor has {n_dims} dimensions (at most 8)")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= cur.unpack("<Q")
        ggml_type, offset = cur.unpack("<I"), cur.unpack("<Q")
        nbytes = _tensor_bytes(ggml_type, n_elements)
        header.n_params += n_elements
        header.tensor_bytes += nbytes
        data_end = max(data_end, offset + nbytes)
    alignment = header.kv.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
        raise GGUFFormatError(f"general.alignment is {alignment!r}, not a positive integer")
    data_start = -(-cur.pos // alignment) * alignment
    header.required_size = data_start + data_end if n_tensors else cur.pos
    if header.required_size > file_size:
        raise GGUFFormatError(
            f"file is truncated: tensor data needs {header.required_size} bytes, the file has {file_size}"
        )
    return header


def _tensor_bytes(ggml_type: int, n_elements: int) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise GGUFFormatError(f"unknown tensor type {ggml_type}") from None
    return n_elements // block * type_size
