"""The result of a sample call, kept as the stored group bytes so the server never re-encodes a group.

`wire()` writes the `SampleGroupsResponse` encoding by hand (three length-delimited fields), which
saves a parse and a serialize of every ~40 KB group; `message()` gives the parsed message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eureka.v1 import buffer_pb2

from shared.wire import field as wire_field


@dataclass
class Sampled:
    kept: list[tuple[str, bytes]] = field(default_factory=list)  # (entry_id, serialized TrajectoryGroup)
    filtered: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def wire(self) -> bytes:
        """The serialized SampleGroupsResponse (SampledGroup: 1 entry_id, 2 group)."""
        parts = [wire_field(1, wire_field(1, eid.encode()) + wire_field(2, blob)) for eid, blob in self.kept]
        parts += [wire_field(2, eid.encode()) for eid in self.filtered]
        parts += [wire_field(3, eid.encode()) for eid in self.stale]
        return b"".join(parts)

    def message(self) -> buffer_pb2.SampleGroupsResponse:
        return buffer_pb2.SampleGroupsResponse.FromString(self.wire())
