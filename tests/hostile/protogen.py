"""Hypothesis strategies for hostile protobuf messages, built from the generated descriptors: any field may
hold edge values (empty, huge, negative where signed, NaN/inf, unknown enum numbers, odd unicode)."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

F = FieldDescriptor
_I32, _I64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)
_INTS = {F.TYPE_INT32: _I32, F.TYPE_SINT32: _I32, F.TYPE_SFIXED32: _I32,
         F.TYPE_INT64: _I64, F.TYPE_SINT64: _I64, F.TYPE_SFIXED64: _I64,
         F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
         F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1)}
# Text a proto3 string field can carry (no lone surrogates): odd unicode, ids, numbers, LaTeX-ish, control chars.
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.sampled_from(["", "0-0", "1-0", "18446744073709551615-0", "1700000000000-0", "-1", "a" * 300, "stop",
                     "length", "x#1", "\x00", "\\frac{1}{2}", "<answer>1</answer>", "{" * 50, "ü", "💥"]),
)


def _int(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, lo, hi, 2**31 - 1, 2**32 - 1, 60_001) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(max(lo, -3), min(hi, 50)))


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INTS:
        return _int(*_INTS[t])
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        width = 32 if t == F.TYPE_FLOAT else 64
        return st.one_of(st.floats(width=width), st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e-3]))
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_STRING:
        return TEXT
    if t == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == F.TYPE_ENUM:
        return st.integers(-3, 8)  # proto3 enums are open: unknown numbers reach the server
    raise TypeError(f"no strategy for field type {t}")


def fields_of(desc: Descriptor, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if f.type == F.TYPE_MESSAGE:
            if depth <= 0:
                continue
            one: st.SearchStrategy[Any] = fields_of(f.message_type, depth - 1)
        else:
            one = scalar(f)
        parts[f.name] = st.lists(one, max_size=4) if f.is_repeated else one
    return st.fixed_dictionaries({}, optional=parts)


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    _fill(msg, values)
    return msg


def _fill(msg: Message, values: dict[str, Any]) -> None:
    for name, value in values.items():
        f = msg.DESCRIPTOR.fields_by_name[name]
        if f.type == F.TYPE_MESSAGE:
            if f.is_repeated:
                for v in value:
                    _fill(getattr(msg, name).add(), v)
            else:
                _fill(getattr(msg, name), value)
                getattr(msg, name).SetInParent()
        elif f.is_repeated:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)


def messages(cls: type[Message], depth: int = 3) -> st.SearchStrategy[Message]:
    """Random instances of `cls` (every field optional, nested up to `depth`)."""
    return fields_of(cls.DESCRIPTOR, depth).map(lambda v: build(cls, v))


def mutated(valid: Message, depth: int = 3) -> st.SearchStrategy[Message]:
    """`valid` with one top-level field replaced by a random value: near misses a validator must catch."""
    desc = valid.DESCRIPTOR
    names = [f.name for f in desc.fields]

    @st.composite
    def one(draw) -> Message:
        name = draw(st.sampled_from(names))
        values = draw(fields_of(desc, depth).filter(lambda v: name in v))
        msg = type(valid)()
        msg.CopyFrom(valid)
        msg.ClearField(name)
        _fill(msg, {name: values[name]})
        return msg

    return one()
