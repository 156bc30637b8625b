"""SampleGroups in pages: a batch larger than a page arrives whole, in order, each group once."""

from __future__ import annotations

import pytest
from eureka.v1 import buffer_pb2

from services.buffer.config import BufferConfig
from services.buffer.core import Buffer
from services.buffer.sampled import Sampled

from .conftest import claim, enqueue, make_config, put, sample_req


def _ready(buf: Buffer, n: int, **kw) -> list[str]:
    start = buf.get_cursor()
    enqueue(buf, start, n)
    return [put(buf, c, **kw).entry_id for c in claim(buf, n=n)]


def _page_of(buf: Buffer, groups: int) -> int:
    """A page size that holds `groups` of the groups `_ready` stores (all the same size)."""
    first = buf.r.xrange(buf.keys.groups, count=1)[0][1][b"g"]
    return groups * len(first) + len(first) // 2


def test_a_batch_above_the_page_arrives_in_pages_in_order(buf: Buffer) -> None:
    ids = _ready(buf, 10, tokens=64)
    page = _page_of(buf, 3)
    got: list[str] = []
    pages: list[tuple[int, bool]] = []
    while len(got) < 10:
        resp = buf.sample_groups(sample_req(10 - len(got), after_entry_id=got[-1] if got else "", max_page_bytes=page))
        got += [g.entry_id for g in resp.groups]
        pages.append((len(resp.groups), resp.more))
    assert got == ids
    assert pages == [(3, True), (3, True), (3, True), (1, False)]
    s = buf.stats()
    assert (s.groups_pending, s.groups_ready) == (10, 0)


def test_a_group_larger_than_the_page_comes_alone(buf: Buffer) -> None:
    ids = _ready(buf, 2, tokens=64)
    resp = buf.sample_groups(sample_req(2, max_page_bytes=1))
    assert [g.entry_id for g in resp.groups] == ids[:1] and resp.more


def test_dropped_groups_past_a_full_page_stay_pending_for_the_next_page(buf: Buffer) -> None:
    kept = _ready(buf, 2, tokens=64)
    last = _ready(buf, 1, tokens=64)
    easy = _ready(buf, 1, tokens=64, accuracies=(1.0, 1.0))
    page = _page_of(buf, 2)
    first = buf.sample_groups(sample_req(3, filter_low=0.1, filter_high=0.9, max_page_bytes=page))
    assert [g.entry_id for g in first.groups] == kept and first.more and not first.filtered_entry_ids
    assert buf.stats().groups_filtered_total == 0  # read past the full page, left as it was
    rest = buf.sample_groups(sample_req(1, filter_low=0.1, filter_high=0.9, max_page_bytes=page,
                                        after_entry_id=kept[-1]))
    assert [g.entry_id for g in rest.groups] == last and not rest.more
    after = _ready(buf, 1, tokens=64)
    third = buf.sample_groups(sample_req(1, filter_low=0.1, filter_high=0.9, after_entry_id=last[-1]))
    assert [g.entry_id for g in third.groups] == after and list(third.filtered_entry_ids) == easy


def test_the_request_cannot_raise_the_page_above_the_buffers(redis_server) -> None:
    b = Buffer(make_config(redis_server, sample_page_bytes=4096))
    b.ensure_groups()
    ids = _ready(b, 4, tokens=256)  # about 2.5 KB a group
    resp = b.sample_groups(sample_req(4, max_page_bytes=1 << 30))
    assert [g.entry_id for g in resp.groups] == ids[:1] and resp.more


def test_the_hand_written_reply_is_the_proto_encoding() -> None:
    group = buffer_pb2.TrajectoryGroup(group_id="p#1", prompt_id="p", attempt=1)
    out = Sampled(page_bytes=10, kept=[("1-0", group.SerializeToString())], filtered=["2-0"], stale=["3-0"], more=True)
    expected = buffer_pb2.SampleGroupsResponse(
        groups=[buffer_pb2.SampledGroup(entry_id="1-0", group=group)], filtered_entry_ids=["2-0"],
        stale_entry_ids=["3-0"], more=True,
    )
    assert out.wire() == expected.SerializeToString()


def test_a_page_larger_than_half_the_message_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="at most half of grpc.max_message_bytes"):
        BufferConfig(sample_page_bytes=40 << 20)
