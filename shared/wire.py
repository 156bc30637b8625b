"""The protobuf wire format read and written directly, without building messages: for a hot path that needs
the fields of a large message as views of its bytes or writes a message around bytes it already has (the
weight stream's chunks, the buffer's PutGroups and SampleGroups).

Field numbers come from the generated descriptors (`number`), never written by hand, so the proto stays
the only contract (tests/shared/test_wire_numbers.py renumbers the proto and checks every reader and writer).

Strict: a varint longer than 10 bytes or above 64 bits, a field number 0, a group or unknown wire type,
or a field that runs past the end raises `WireError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


VARINT, I64, LEN, I32 = 0, 1, 2, 5
_FIXED_SIZE = {I64: 8, I32: 4}


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def number(message: Any, name: str) -> int:
    """The field number of `name` in the generated message class `message`, from its descriptor."""
    return message.DESCRIPTOR.fields_by_name[name].number


def varint(n: int) -> bytes:
    """`n` (>= 0) encoded as a varint."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(field_number: int, wire_type: int) -> bytes:
    """The key that opens a field: its number and wire type as a varint."""
    return varint(field_number << 3 | wire_type)


def len_prefix(field_number: int, size: int) -> bytes:
    """The key and length that open a length-delimited field of `size` bytes."""
    return tag(field_number, LEN) + varint(size)


def field(field_number: int, payload: bytes) -> bytes:
    """A whole length-delimited field."""
    return len_prefix(field_number, len(payload)) + payload


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `pos`."""
    if pos + 1 < len(buf):  # one or two bytes (tags and lengths below 16 KiB) without the loop: the common case
        first = buf[pos]
        if first < 0x80:
            return first, pos + 1
        if buf[pos + 1] < 0x80:
            return first & 0x7F | buf[pos + 1] << 7, pos + 2
    value = shift = 0
    for i in range(pos, min(pos + 10, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 64:
                break
            return value, i + 1
        shift += 7
    raise WireError(f"bad varint at byte {pos} of {len(buf)}")


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field in order: an int for a varint, else a view of the bytes."""
    view, end, pos = memoryview(buf), len(buf), 0
    while pos < end:
        key, pos = read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = read_varint(view, pos)
            yield number, wire, value
            continue
        if wire == LEN:
            size, pos = read_varint(view, pos)
        elif wire in _FIXED_SIZE:
            size = _FIXED_SIZE[wire]
        else:
            raise WireError(f"unsupported wire type {wire} (field {number}) at byte {pos}")
        if pos + size > end:
            raise WireError(f"field {number} runs past the end of the message")
        yield number, wire, view[pos : pos + size]
        pos += size
