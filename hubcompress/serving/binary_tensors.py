"""The binary tensor extension of the Open Inference Protocol: byte layouts of the body.

A request or response body is a JSON header of ``Inference-Header-Content-Length`` bytes, then the
raw tensors in input (or output) order, each ``binary_data_size`` bytes; numbers are little-endian,
and each BYTES element is a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from hubcompress.serving.graph import TensorSpec
from hubcompress.serving.request_errors import InvalidRequest


def split_binary_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """Split a body into its JSON header and binary tail (``header_length`` None: all JSON).

    Example:
        >>> split_binary_body(b'{"a": 1}xyz', "8")
        (b'{"a": 1}', b'xyz')
    """
    if header_length is None:
        return raw, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
    if not 0 <= length <= len(raw):
        raise InvalidRequest(f"Inference-Header-Content-Length {length} is outside the {len(raw)}-byte body")
    return raw[:length], raw[length:]


def decode_numeric(chunk: bytes, spec: TensorSpec, where: str) -> np.ndarray:
    """A flat little-endian array of ``spec``'s dtype from raw bytes.

    Example:
        >>> from hubcompress.serving.graph import TensorSpec
        >>> decode_numeric(bytes([7, 0, 0, 0, 0, 0, 0, 0]), TensorSpec("ids", "INT64", (-1,), (None,)), "in").tolist()
        [7]
    """
    itemsize = spec.numpy_dtype.itemsize
    if len(chunk) % itemsize:
        raise InvalidRequest(f"{where}: {len(chunk)} binary bytes are not a whole number of {spec.datatype} values")
    return np.frombuffer(chunk, dtype=spec.numpy_dtype.newbyteorder("<"))


def decode_bytes_elements(chunk: bytes, where: str) -> list[str]:
    """The UTF-8 texts of a BYTES tensor: each a 4-byte little-endian length, then its bytes.

    Example:
        >>> decode_bytes_elements(b"\\x02\\x00\\x00\\x00hi\\x00\\x00\\x00\\x00", "inputs[0]")
        ['hi', '']
    """
    texts, position = [], 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            raise InvalidRequest(f"{where}: truncated BYTES element length at byte {position}")
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        if position + length > len(chunk):
            raise InvalidRequest(f"{where}: a BYTES element of {length} bytes runs past the data")
        try:
            texts.append(chunk[position : position + length].decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InvalidRequest(f"{where}: a BYTES element is not UTF-8 text: {err}") from None
        position += length
    return texts
