"""The result of a sample call, kept as the stored group bytes so the server never re-encodes a group.

`wire()` writes the `SampleGroupsResponse` encoding directly (three length-delimited fields, numbered from the
descriptors), which saves a parse and a serialize of every group; `message()` gives the parsed message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eureka.v1 import buffer_pb2

from shared import wire

_RESPONSE, _SAMPLED = buffer_pb2.SampleGroupsResponse, buffer_pb2.SampledGroup
_GROUPS, _FILTERED, _STALE = (wire.number(_RESPONSE, f) for f in ("groups", "filtered_entry_ids", "stale_entry_ids"))
_ENTRY_ID, _GROUP = wire.number(_SAMPLED, "entry_id"), wire.number(_SAMPLED, "group")


@dataclass
class Sampled:
    kept: list[tuple[str, bytes]] = field(default_factory=list)  # (entry_id, serialized TrajectoryGroup)
    filtered: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def wire(self) -> bytes:
        """The serialized SampleGroupsResponse."""
        parts = [wire.field(_GROUPS, wire.field(_ENTRY_ID, eid.encode()) + wire.field(_GROUP, blob))
                 for eid, blob in self.kept]
        parts += [wire.field(_FILTERED, eid.encode()) for eid in self.filtered]
        parts += [wire.field(_STALE, eid.encode()) for eid in self.stale]
        return b"".join(parts)

    def message(self) -> buffer_pb2.SampleGroupsResponse:
        return buffer_pb2.SampleGroupsResponse.FromString(self.wire())
