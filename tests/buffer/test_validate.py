"""Put validation checks token ids and log-probs with numpy; it must judge exactly as a plain element-by-element
reading of the message does (same verdict, same sentence, the same first fault), on random groups."""

from __future__ import annotations

import math

import pytest
from eureka.v1 import buffer_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from services.buffer import validate
from services.buffer.config import BufferConfig
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
