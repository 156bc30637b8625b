"""The put hot path reads a PutGroupsRequest's wire bytes beside the parsed message.

Two savings over working on the parsed message alone: each group is stored as the bytes it arrived in
(not serialized again), and the response token ids and behaviour log-probs of every sample in the call
are checked in one vectorized pass over their packed encodings instead of converting each array.
Anything outside the canonical layout (unpacked or split repeated fields, a put or group sent in several
pieces, a token id of 2^28 or more) is left to the full checks of `validate.put_many` on the parsed
message, so the verdict never depends on the encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from eureka.v1 import buffer_pb2

from shared import wire

_PUTS = wire.number(buffer_pb2.PutGroupsRequest, "puts")
_GROUP = wire.number(buffer_pb2.PutGroupRequest, "group")
_SAMPLES = wire.number(buffer_pb2.TrajectoryGroup, "samples")
_TOKENS_TAG = wire.tag(wire.number(buffer_pb2.Sample, "response_token_ids"), wire.LEN)  # packed
_LOGPROBS_TAG = wire.tag(wire.number(buffer_pb2.Sample, "behaviour_logprobs"), wire.LEN)  # packed
_MAX_ID_BYTES = 4  # a varint of at most 4 bytes is below 2^28: never negative once read as an int32


@dataclass(frozen=True)
class PutWire:
    """What the wire bytes of one PutGroupsRequest tell beyond the parsed message."""

    groups: list[bytes] | None  # each put's serialized TrajectoryGroup as received; None: serialize the parsed one
    arrays_ok: bool  # every sample's token ids are non-negative and its log-probs finite and <= 1e-3

    def group_bytes(self, req: buffer_pb2.PutGroupsRequest) -> list[bytes]:
        """The bytes to store for each put's group: as received, else the parsed group serialized."""
        return self.groups or [p.group.SerializeToString() for p in req.puts]


NOT_READ = PutWire(None, False)


def read(raw: bytes, req: buffer_pb2.PutGroupsRequest) -> PutWire:
    """The groups' bytes and the array verdict of `req`, parsed from `raw`; NOT_READ when the layout is unusual."""
    try:
        return _read(raw, req)
    except wire.WireError:  # what protobuf parses but this reader does not (a deprecated group field, say)
        return NOT_READ


def _read(raw: bytes, req: buffer_pb2.PutGroupsRequest) -> PutWire:
    puts = [v for n, t, v in wire.fields(raw) if n == _PUTS and t == wire.LEN]
    if len(puts) != len(req.puts):
        return NOT_READ
    groups: list[bytes] = []
    token_spans: list[memoryview] = []
    logprob_spans: list[memoryview] = []
    tokens = 0
    canonical = True  # every sample's arrays sit whole in one packed field each, at its start
    for put_bytes, put in zip(puts, req.puts):
        group = [v for n, t, v in wire.fields(put_bytes) if n == _GROUP and t == wire.LEN]  # a group sent in pieces is merged
        if len(group) != 1:
            return NOT_READ
        samples = [v for n, t, v in wire.fields(group[0]) if n == _SAMPLES and t == wire.LEN]
        if len(samples) != len(put.group.samples):
            return NOT_READ
        groups.append(bytes(group[0]))
        for sample_bytes, sample in zip(samples, put.group.samples):
            ids, logprobs, pos = _EMPTY, _EMPTY, 0
            if sample_bytes[pos : pos + len(_TOKENS_TAG)] == _TOKENS_TAG:
                ids, pos = _span(sample_bytes, pos + len(_TOKENS_TAG))
            if sample_bytes[pos : pos + len(_LOGPROBS_TAG)] == _LOGPROBS_TAG:
                logprobs, pos = _span(sample_bytes, pos + len(_LOGPROBS_TAG))
            n = len(sample.response_token_ids)
            canonical = canonical and len(sample.behaviour_logprobs) == n and len(logprobs) == 4 * n
            token_spans.append(ids)
            logprob_spans.append(logprobs)
            tokens += n
    arrays_ok = canonical and _ids_ok(b"".join(token_spans), tokens) and _logprobs_ok(b"".join(logprob_spans))
    return PutWire(groups, arrays_ok)


_EMPTY = memoryview(b"")


def _span(buf: memoryview, pos: int) -> tuple[memoryview, int]:
    size, pos = wire.read_varint(buf, pos)
    return buf[pos : pos + size], pos + size


def _ids_ok(packed: bytes, expected: int) -> bool:
    """All `expected` ids are in these spans (none elsewhere in the message) and each takes at most 4 bytes."""
    ends = np.flatnonzero(np.frombuffer(packed, np.uint8) < 0x80)
    if len(ends) != expected:  # the first spans hold fewer ids than the parsed arrays: more spans exist
        return False
    return expected == 0 or (ends[0] < _MAX_ID_BYTES and int(np.diff(ends).max(initial=0)) <= _MAX_ID_BYTES)


def _logprobs_ok(packed: bytes) -> bool:
    values = np.frombuffer(packed, "<f4")
    return bool(np.isfinite(values).all()) and (values.size == 0 or float(values.max()) <= 1e-3)
