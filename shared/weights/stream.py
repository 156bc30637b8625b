"""A version's trainable tensors as one byte stream in buckets: the plan both ends compute from the layout, and
each end's side of the collectives, a few buckets in flight at a time.

A tensor of at least `COALESCE_BELOW` bytes is broadcast from its own memory (in slices of `bucket_bytes` when
larger), so the sender copies nothing; smaller tensors share a bucket, copied into it once. The receiver lands
every bucket straight in its place in the staging buffer. Each end hashes a bucket while later ones are on
the wire: XXH3-128 seeded with the version, over the buckets in order, checked against the 16 bytes that
close the stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import xxhash

from shared.weights.group import Layout, flat_bytes, offsets

if TYPE_CHECKING:
    import torch

COALESCE_BELOW = 1 << 20  # each collective costs a round trip: below this a copy into a shared bucket is cheaper
IN_FLIGHT = 4  # collectives issued ahead of the one waited on: the next buckets move while one is hashed


class StreamMismatch(Exception):
    """The received stream does not match the digest that closes it."""


@dataclass(frozen=True)
class Bucket:
    """One collective: `length` bytes at `offset` of the stream, from tensors [first, stop) of the layout;
    `alone`: a slice of one tensor, sent from its memory (else the tensors are copied into one buffer)."""

    offset: int
    length: int
    first: int
    stop: int
    alone: bool


def plan(layout: Layout, bucket_bytes: int) -> list[Bucket]:
    """The buckets of a layout's stream, in order (the same on every end)."""
    starts, _ = offsets(layout)
    sizes = [t[3] for t in layout.tensors]
    out: list[Bucket] = []
    i = 0
    while i < len(sizes):
        if sizes[i] >= min(COALESCE_BELOW, bucket_bytes):  # alone, from its own memory
            out += [Bucket(starts[i] + o, min(bucket_bytes, sizes[i] - o), i, i + 1, True)
                    for o in range(0, sizes[i], bucket_bytes)]
            i += 1
            continue
        j = i
        while j < len(sizes) and sizes[j] < COALESCE_BELOW and starts[j] + sizes[j] - starts[i] <= bucket_bytes:
            j += 1
        end = starts[j - 1] + sizes[j - 1]
        if end > starts[i]:
            out.append(Bucket(starts[i], end - starts[i], i, j, False))
        i = j
    return out


def stream_bytes(layout: Layout, bucket_bytes: int) -> int:
    """The bytes one round broadcasts (the digest's 16 aside)."""
    return sum(b.length for b in plan(layout, bucket_bytes))


def _start(group: Any, tensor: torch.Tensor, timeout_s: float) -> Any:
    """One broadcast from rank 0 into `tensor`, started: its work handle."""
    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    opts.timeout = timedelta(seconds=timeout_s)
    return group.broadcast([tensor], opts)


def _pipelined(group: Any, tensors: Iterator[torch.Tensor], timeout_s: float,
               done: Callable[[int, torch.Tensor], None]) -> None:
    """Broadcasts each tensor in turn with up to IN_FLIGHT more started behind it; `done(n, tensor)` in order."""
    in_flight: deque[tuple[Any, torch.Tensor]] = deque()
    n = 0

    def finish_oldest() -> None:
        nonlocal n
        work, t = in_flight.popleft()
        work.wait()
        done(n, t)
        n += 1

    for tensor in tensors:
        in_flight.append((_start(group, tensor, timeout_s), tensor))
        if len(in_flight) > IN_FLIGHT:
            finish_oldest()
    while in_flight:
        finish_oldest()


def _sources(layout: Layout, state_dict: dict[str, torch.Tensor], buckets: list[Bucket],
             device: str) -> Iterator[torch.Tensor]:
    """Each bucket's bytes on the sender: a view of its tensor, or the small tensors copied into one buffer."""
    import torch

    starts, _ = offsets(layout)
    for b in buckets:
        if b.alone:
            lo = b.offset - starts[b.first]
            data = flat_bytes(state_dict[layout.tensors[b.first][0]])[lo : lo + b.length]
        else:
            data = torch.zeros(b.length, dtype=torch.uint8)  # zero padding between the tensors
            for k in range(b.first, b.stop):
                pos = starts[k] - b.offset
                data[pos : pos + layout.tensors[k][3]].copy_(flat_bytes(state_dict[layout.tensors[k][0]]))
        yield data if device == "cpu" else data.to(device)


def send(group: Any, layout: Layout, state_dict: dict[str, torch.Tensor], bucket_bytes: int, device: str,
         timeout_s: float, on_bucket: Callable[[int], None] | None = None) -> int:
    """Rank 0's side: the buckets, then their digest; returns the bytes broadcast."""
    import torch

    buckets = plan(layout, bucket_bytes)
    digest = xxhash.xxh3_128(seed=layout.version)

    def hashed() -> Iterator[torch.Tensor]:
        for data in _sources(layout, state_dict, buckets, device):
            yield data  # started before it is hashed: the hash runs while the collective moves it
            digest.update((data if device == "cpu" else data.cpu()).numpy())

    _pipelined(group, hashed(), timeout_s, lambda n, _: on_bucket(n) if on_bucket is not None else None)
    tail = torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8).to(device)
    _start(group, tail, timeout_s).wait()
    return sum(b.length for b in buckets)


def receive(group: Any, layout: Layout, staged: torch.Tensor, bucket_bytes: int, device: str,
            timeout_s: float) -> None:
    """A member's side: every bucket into its place in `staged` (uint8, the stream's length), the digest checked."""
    import torch

    buckets = plan(layout, bucket_bytes)
    digest = xxhash.xxh3_128(seed=layout.version)

    def targets() -> Iterator[torch.Tensor]:
        for b in buckets:
            view = staged[b.offset : b.offset + b.length]
            yield view if device == "cpu" else torch.empty(b.length, dtype=torch.uint8, device=device)

    def landed(n: int, got: torch.Tensor) -> None:
        view = staged[buckets[n].offset : buckets[n].offset + buckets[n].length]
        if device != "cpu":
            view.copy_(got)
        digest.update(view.numpy())

    _pipelined(group, targets(), timeout_s, landed)
    tail = torch.zeros(16, dtype=torch.uint8, device=device)
    _start(group, tail, timeout_s).wait()
    if bytes(tail.cpu().numpy()) != digest.digest():
        raise StreamMismatch(f"version {layout.version}: the received stream does not match its digest")
