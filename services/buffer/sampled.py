"""The result of a sample call, kept as the stored group bytes so the server never re-encodes a group.

`wire()` writes the `SampleGroupsResponse` encoding directly (fields numbered from the descriptors), which
saves a parse and a serialize of every group; `message()` gives the parsed message. A call holds at most a
page of groups (`page_bytes`, at least one group), so the buffer's memory is bounded by a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eureka.v1 import buffer_pb2

from shared import wire

_RESPONSE, _SAMPLED = buffer_pb2.SampleGroupsResponse, buffer_pb2.SampledGroup
_GROUPS, _FILTERED, _STALE = (wire.number(_RESPONSE, f) for f in ("groups", "filtered_entry_ids", "stale_entry_ids"))
_ENTRY_ID, _GROUP = wire.number(_SAMPLED, "entry_id"), wire.number(_SAMPLED, "group")
_MORE = wire.tag(wire.number(_RESPONSE, "more"), wire.VARINT) + wire.varint(1)

FIRST_READ = 8  # groups read before any group's size is known


@dataclass
class Sampled:
    page_bytes: int
    kept: list[tuple[str, bytes]] = field(default_factory=list)  # (entry_id, serialized TrajectoryGroup)
    filtered: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    more: bool = False  # the page filled before num_groups groups
    kept_bytes: int = 0
    largest: int = 0

    def keep(self, entry_id: str, blob: bytes) -> bool:
        """Adds a group unless the page is full (`more` is then set): at least one group a page."""
        if self.kept and self.kept_bytes + len(blob) > self.page_bytes:
            self.more = True
            return False
        self.kept.append((entry_id, blob))
        self.kept_bytes += len(blob)
        self.largest = max(self.largest, len(blob))
        return True

    def reads_for(self, need: int) -> int:
        """How many entries the next read takes: what the rest of the page holds at the largest group seen."""
        if not self.largest:
            return min(need, FIRST_READ)
        return max(1, min(need, (self.page_bytes - self.kept_bytes) // self.largest))

    def wire(self) -> bytes:
        """The serialized SampleGroupsResponse."""
        parts = [wire.field(_GROUPS, wire.field(_ENTRY_ID, eid.encode()) + wire.field(_GROUP, blob))
                 for eid, blob in self.kept]
        parts += [wire.field(_FILTERED, eid.encode()) for eid in self.filtered]
        parts += [wire.field(_STALE, eid.encode()) for eid in self.stale]
        if self.more:
            parts.append(_MORE)
        return b"".join(parts)

    def message(self) -> buffer_pb2.SampleGroupsResponse:
        return buffer_pb2.SampleGroupsResponse.FromString(self.wire())
