"""Put validation checks token ids and log-probs with numpy, or from the request's wire bytes (`put_wire`); it
must judge exactly as a plain element-by-element reading of the message does (same verdict, same sentence, the
same first fault), on random groups and in any encoding of them."""

from __future__ import annotations

import math

import pytest
from eureka.v1 import buffer_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from services.buffer import put_wire, validate
from services.buffer.config import BufferConfig
from shared import wire
from shared.grpc_server import InvalidArgument

CFG = BufferConfig(max_tokens_per_sample=12)
INT32 = st.integers(-(2**31), 2**31 - 1)
FLOAT32 = st.floats(width=32) | st.sampled_from([1e-3, 0.002, 0.5, 0.0, -0.0])  # 1e-3 as float32 is above 1e-3


def plain_verdict(g: buffer_pb2.TrajectoryGroup) -> str | None:
    """The array and score checks of `validate.put`, element by element on the parsed message."""
    if len(g.prompt_token_ids) > CFG.max_tokens_per_sample or min(g.prompt_token_ids) < 0:
        return f"group {g.group_id!r} prompt_token_ids must be 1 to {CFG.max_tokens_per_sample} non-negative ids"
    for i, s in enumerate(g.samples):
        where, n, m = f"group {g.group_id!r} sample {i}", len(s.response_token_ids), len(s.behaviour_logprobs)
        if n > CFG.max_tokens_per_sample:
            return f"{where} has {n} response tokens; the limit is {CFG.max_tokens_per_sample}"
        if m != n:
            return f"{where} has {m} behaviour_logprobs for {n} response tokens; send one per token"
        if any(t < 0 for t in s.response_token_ids):
            return f"{where} has a negative token id"
        if not all(math.isfinite(x) and x <= 1e-3 for x in s.behaviour_logprobs):
            return f"{where} has a behaviour log-prob that is not finite or is above 0"
        if not 0.0 <= s.accuracy <= 1.0:
            return f"{where} has accuracy {s.accuracy}; it must be in [0, 1]"
    return None


@st.composite
def samples(draw) -> buffer_pb2.Sample:
    n = draw(st.integers(0, 14))
    good = draw(st.booleans())  # half the samples valid, so later samples get checked too
    ids = draw(st.lists(st.integers(0, 150_000) if good else INT32, min_size=n, max_size=n))
    lps = draw(st.lists(st.floats(-50, 0, width=32) if good else FLOAT32, min_size=n, max_size=n))
    if not good and draw(st.booleans()):
        lps = lps[: draw(st.integers(0, n))] + draw(st.lists(FLOAT32, max_size=2))
    return buffer_pb2.Sample(response_token_ids=ids, behaviour_logprobs=lps, finish_reason="stop",
                             accuracy=draw(st.sampled_from([0.0, 1.0, 0.5, 1.5]) if not good else st.just(1.0)))


@settings(max_examples=400, deadline=None)
@given(ss=st.lists(samples(), min_size=1, max_size=6),
       prompt=st.lists(st.integers(0, 150_000) | INT32, min_size=1, max_size=14))
def test_put_validation_judges_as_the_plain_reading(ss, prompt) -> None:
    g = buffer_pb2.TrajectoryGroup(group_id="p#1", prompt_id="p", attempt=1, prompt_token_ids=prompt, samples=ss)
    want = plain_verdict(g)
    req = buffer_pb2.PutGroupRequest(group=g, claim_id="1-0", worker_id="w")
    if want is None:
        validate.put(req, CFG)
    else:
        with pytest.raises(InvalidArgument) as e:
            validate.put(req, CFG)
        assert str(e.value) == want


@st.composite
def one_fault_samples(draw) -> buffer_pb2.Sample:
    """A good sample, or one with a single fault at a random place: the wire reading must find each alone."""
    n = draw(st.integers(1, 14))
    ids = draw(st.lists(st.integers(0, 150_000), min_size=n, max_size=n))
    lps = draw(st.lists(st.floats(-50, 0, width=32), min_size=n, max_size=n))
    at = draw(st.integers(0, n - 1))
    fault = draw(st.sampled_from(["none", "negative id", "id of 2^28 or more", "log-prob", "missing log-prob"]))
    if fault == "negative id":
        ids[at] = draw(st.integers(-(2**31), -1))
    elif fault == "id of 2^28 or more":  # valid, but past what the wire reading judges
        ids[at] = draw(st.integers(2**28, 2**31 - 1))
    elif fault == "log-prob":
        lps[at] = draw(st.sampled_from([math.nan, math.inf, 1e-3, 0.002, 5.0]))
    elif fault == "missing log-prob":
        del lps[at]
    return buffer_pb2.Sample(response_token_ids=ids, behaviour_logprobs=lps, finish_reason="stop", accuracy=1.0)


def _sample_bytes(s: buffer_pb2.Sample, how: str) -> bytes:
    """`s` encoded canonically, with its token ids and/or log-probs split over two packed fields (pieces of a
    message parse as one: repeated fields concatenate), or with unpacked token ids."""
    rest = buffer_pb2.Sample()
    rest.CopyFrom(s)
    rest.ClearField("response_token_ids")
    rest.ClearField("behaviour_logprobs")
    ids, lps, half = list(s.response_token_ids), list(s.behaviour_logprobs), len(s.response_token_ids) // 2
    if how == "unpacked":
        unpacked = b"".join(wire.varint(1 << 3 | wire.VARINT) + wire.varint(t % 2**64) for t in ids)
        return unpacked + buffer_pb2.Sample(behaviour_logprobs=lps).SerializeToString() + rest.SerializeToString()
    cut_ids, cut_lps = how in ("split", "split_ids"), how in ("split", "split_logprobs")
    pieces = [buffer_pb2.Sample(response_token_ids=ids[:half] if cut_ids else ids, behaviour_logprobs=lps[:half] if cut_lps else lps)]
    if cut_ids or cut_lps:
        pieces.append(buffer_pb2.Sample(response_token_ids=ids[half:] if cut_ids else [], behaviour_logprobs=lps[half:] if cut_lps else []))
    return b"".join(p.SerializeToString() for p in pieces) + rest.SerializeToString()


def _request_bytes(g: buffer_pb2.TrajectoryGroup, hows: list[str], group_in_pieces: bool) -> bytes:
    head = buffer_pb2.TrajectoryGroup()
    head.CopyFrom(g)
    head.ClearField("samples")
    samples = b"".join(wire.field(6, _sample_bytes(s, how)) for s, how in zip(g.samples, hows))
    group = wire.field(1, head.SerializeToString()) + wire.field(1, samples) if group_in_pieces else wire.field(1, head.SerializeToString() + samples)
    put = group + buffer_pb2.PutGroupRequest(claim_id="1-0", worker_id="w").SerializeToString()
    return wire.field(1, put)


def _verdict(req: buffer_pb2.PutGroupsRequest, arrays_checked: bool) -> str | None:
    try:
        validate.put_many(req, CFG, arrays_checked=arrays_checked)
    except InvalidArgument as e:
        return str(e)
    return None


@settings(max_examples=400, deadline=None)
@given(ss=st.lists(samples() | one_fault_samples(), min_size=1, max_size=5), data=st.data())
def test_put_validation_with_the_wire_reading_judges_as_without(ss, data) -> None:
    """`put_wire.read` may only spare checks that would pass: for any encoding the verdict stays the same,
    the stored bytes parse to the checked group, and the canonical encoding of good arrays takes the fast path."""
    g = buffer_pb2.TrajectoryGroup(group_id="p#1", prompt_id="p", attempt=1, prompt_token_ids=[1], samples=ss)
    hows = data.draw(st.lists(st.sampled_from(["canonical", "split", "split_ids", "split_logprobs", "unpacked"]), min_size=len(ss), max_size=len(ss)))
    raw = _request_bytes(g, hows, group_in_pieces=data.draw(st.booleans()))
    req = buffer_pb2.PutGroupsRequest.FromString(raw)
    assert req.puts[0].group == g
    received = put_wire.read(raw, req)
    assert _verdict(req, arrays_checked=received.arrays_ok) == _verdict(req, arrays_checked=False)
    if received.groups is not None:
        assert buffer_pb2.TrajectoryGroup.FromString(received.groups[0]) == g
    canonical = buffer_pb2.PutGroupsRequest(puts=[buffer_pb2.PutGroupRequest(group=g, claim_id="1-0", worker_id="w")])
    fast = put_wire.read(canonical.SerializeToString(), canonical)
    assert fast.groups == [g.SerializeToString()]
    arrays_good = all(len(s.behaviour_logprobs) == len(s.response_token_ids)
                      and all(0 <= t < 2**28 for t in s.response_token_ids)
                      and all(math.isfinite(x) and x <= 1e-3 for x in s.behaviour_logprobs) for s in ss)
    assert fast.arrays_ok == arrays_good


ENCODINGS = ["canonical", "split", "split_ids", "split_logprobs", "unpacked"]
FAULTS = {  # a fault in the last element: past the first piece of a split field
    "none": ([1, 2, 3, 4], [-1.0] * 4),
    "negative id": ([1, 2, 3, -5], [-1.0] * 4),
    "id of 2^28": ([1, 2, 3, 2**28], [-1.0] * 4),
    "NaN log-prob": ([1, 2, 3, 4], [-1.0, -1.0, -1.0, math.nan]),
    "log-prob above 0": ([1, 2, 3, 4], [-1.0, -1.0, -1.0, 0.5]),
    "missing log-prob": ([1, 2, 3, 4], [-1.0] * 3),
}


@pytest.mark.parametrize("how", ENCODINGS)
@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_in_each_encoding_is_judged_as_without_the_wire_reading(how: str, fault: str) -> None:
    ids, lps = FAULTS[fault]
    s = buffer_pb2.Sample(response_token_ids=ids, behaviour_logprobs=lps, finish_reason="stop", accuracy=1.0)
    g = buffer_pb2.TrajectoryGroup(group_id="p#1", prompt_id="p", attempt=1, prompt_token_ids=[1], samples=[s])
    raw = _request_bytes(g, [how], group_in_pieces=False)
    req = buffer_pb2.PutGroupsRequest.FromString(raw)
    received = put_wire.read(raw, req)
    assert _verdict(req, arrays_checked=received.arrays_ok) == _verdict(req, arrays_checked=False)
    assert received.arrays_ok == (how == "canonical" and fault == "none")


def test_what_protobuf_parses_but_the_wire_reader_does_not_falls_back_to_the_message() -> None:
    g = buffer_pb2.TrajectoryGroup(group_id="p#1", prompt_id="p", attempt=1, prompt_token_ids=[1],
                                   samples=[buffer_pb2.Sample(response_token_ids=[1, -2], behaviour_logprobs=[-1.0, -1.0],
                                                              finish_reason="stop")])
    raw = _request_bytes(g, ["canonical"], group_in_pieces=False) + bytes([15 << 3 | 3, 15 << 3 | 4])  # an unknown group
    req = buffer_pb2.PutGroupsRequest.FromString(raw)
    assert put_wire.read(raw, req) == put_wire.NOT_READ
    assert "negative token id" in _verdict(req, arrays_checked=False)
    no_group = buffer_pb2.PutGroupsRequest(puts=[buffer_pb2.PutGroupRequest(claim_id="1-0", worker_id="w")])
    assert put_wire.read(no_group.SerializeToString(), no_group) == put_wire.NOT_READ
