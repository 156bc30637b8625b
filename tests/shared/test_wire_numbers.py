"""The proto is the only contract: every hand-rolled wire reader and writer (weight chunk frames, the buffer's
SampleGroups answer and PutGroups reader) takes its field numbers from the generated descriptors.

The check renumbers every message field in a copy of proto/ (each number + 20, order kept), regenerates the
Python modules, and runs the readers and writers against them in a subprocess: a number written by hand
anywhere in them makes protobuf and our code disagree there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIFT = 20
# a message field: `[repeated|optional] type name = N;` (enum values have no type before the name)
_FIELD = re.compile(r"^(\s*(?:repeated\s+|optional\s+)?[\w.]+\s+\w+\s*=\s*)(\d+)(\s*[;\[])")

CHECK = r'''
import numpy as np
import torch
from eureka.v1 import buffer_pb2, weights_pb2

from services.buffer import put_wire
from services.buffer.sampled import Sampled
from shared.weights.frames import parse_chunk_frame
from shared.weights.safetensors_io import serialize_state_dict
from shared.weights.store import Published

assert weights_pb2.__file__.startswith(GEN), weights_pb2.__file__
assert weights_pb2.WeightChunk.DESCRIPTOR.fields_by_name["data"].number == 3 + SHIFT

blob = bytes(range(256)) * 9
published = Published.of(7, blob, 1)
assert published.blob == blob
frozen = Published.of(7, serialize_state_dict({"a": torch.ones(300), "v.b": torch.zeros(300)}), 2, frozen=["v.b"],
                      frozen_digest="ff" * 16)
trainable = list(frozen.frames_of(1000, "ff" * 16))  # the frozen chunks left out, closed by an empty last chunk
for frame in [*published.frames_of(1000), *frozen.frames_of(1000), *trainable]:
    want, got = weights_pb2.WeightChunk.FromString(frame), parse_chunk_frame(frame)
    assert (got.policy_version, got.offset, bytes(got.data), got.checksum, got.last, got.total_bytes, got.digest,
            got.frozen_digest, got.frozen) == (
        want.policy_version, want.offset, want.data, want.checksum, want.last, want.total_bytes, want.digest,
        want.frozen_digest, want.frozen), frame[:40]
    assert want.policy_version == 7 and want.digest in (published.digest, frozen.digest)
assert any(parse_chunk_frame(f).frozen for f in frozen.frames_of(1000)) and parse_chunk_frame(trainable[-1]).last
assert weights_pb2.StreamWeightsRequest.DESCRIPTOR.fields_by_name["frozen_digest"].number == 3 + SHIFT

group = buffer_pb2.TrajectoryGroup(group_id="p#1", prompt_id="p", attempt=1, samples=[
    buffer_pb2.Sample(response_token_ids=[5, 300, 70000], behaviour_logprobs=[-0.5, -1.0, -2.0], reward=1.0)])
sampled = Sampled(1 << 20, kept=[("1-0", group.SerializeToString())], filtered=["2-0"], stale=["3-0"], more=True)
assert sampled.message() == buffer_pb2.SampleGroupsResponse(
    groups=[buffer_pb2.SampledGroup(entry_id="1-0", group=group)], filtered_entry_ids=["2-0"], stale_entry_ids=["3-0"],
    more=True)

request = buffer_pb2.PutGroupsRequest(puts=[buffer_pb2.PutGroupRequest(group=group, claim_id="c", worker_id="w")])
raw = request.SerializeToString()
read = put_wire.read(raw, buffer_pb2.PutGroupsRequest.FromString(raw))
assert read.groups == [group.SerializeToString()] and read.arrays_ok, read
request.puts[0].group.samples[0].behaviour_logprobs[1] = 0.5  # a positive log-prob: the packed check must see it
raw = request.SerializeToString()
assert not put_wire.read(raw, buffer_pb2.PutGroupsRequest.FromString(raw)).arrays_ok
print("ok")
'''


def renumber(text: str) -> str:
    """Every message field's number + SHIFT; enum values untouched."""
    out, in_enum = [], False
    for line in text.splitlines():
        if re.match(r"\s*enum\s+\w+\s*\{", line):
            in_enum = True
        elif in_enum and "}" in line:
            in_enum = False
        elif not in_enum:
            line = _FIELD.sub(lambda m: f"{m[1]}{int(m[2]) + SHIFT}{m[3]}", line)
        out.append(line)
    return "\n".join(out) + "\n"


def test_renumber_moves_every_message_field_and_no_enum_value() -> None:
    text = "message A {\n  repeated int32 a = 1;\n  optional float b = 2;  // c\n}\nenum E {\n  E_X = 0;\n  E_Y = 1;\n}\n"
    assert renumber(text) == text.replace("= 1;", "= 21;", 1).replace("= 2;", "= 22;")


def test_readers_and_writers_follow_a_renumbered_proto(tmp_path: Path) -> None:
    from grpc_tools import protoc

    proto, gen = tmp_path / "proto", tmp_path / "gen"
    for src in (REPO / "proto").rglob("*.proto"):
        dst = proto / src.relative_to(REPO / "proto")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(renumber(src.read_text()))
    gen.mkdir()
    files = [str(p.relative_to(proto)) for p in proto.rglob("*.proto")]
    assert protoc.main(["protoc", f"-I{proto}", f"--python_out={gen}", f"--grpc_python_out={gen}", *files]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(gen), str(REPO)])}
    script = f"GEN, SHIFT = {str(gen)!r}, {SHIFT}\n" + CHECK
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
