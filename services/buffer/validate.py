"""Checks of every request field; each failure is an `InvalidArgument` with a sentence, raised before any write."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from eureka.v1 import buffer_pb2

from services.buffer.config import BufferConfig
from shared.grpc_server import InvalidArgument

_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_MAX_NAME = 256
FINISH_REASONS = ("stop", "length")


def name(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is empty; set it to a non-empty name")
    if len(value) > _MAX_NAME:
        raise InvalidArgument(f"{field} has {len(value)} characters; keep it to {_MAX_NAME}")


def entry_ids(ids: Sequence[str], field: str, cfg: BufferConfig) -> None:
    if not ids:
        raise InvalidArgument(f"{field} is empty; pass at least one entry id")
    if len(ids) > cfg.max_items_per_call:
        raise InvalidArgument(f"{field} has {len(ids)} ids; send at most {cfg.max_items_per_call} per call")
    for i in ids:
        entry_id(i, field)


def entry_id(value: str, field: str) -> None:
    if not _ENTRY_ID.match(value):
        raise InvalidArgument(f"{field} holds {value[:40]!r}, which is not a stream entry id like '1700000000000-0'")


def count(value: int, field: str, cfg: BufferConfig) -> None:
    if not 1 <= value <= cfg.max_items_per_call:
        raise InvalidArgument(f"{field} is {value}; ask for 1 to {cfg.max_items_per_call}")


def wait_ms(value: int, cfg: BufferConfig) -> None:
    if value > cfg.max_wait_ms:
        raise InvalidArgument(f"wait_ms is {value}; wait at most {cfg.max_wait_ms} ms per call and call again")


def enqueue(req: buffer_pb2.EnqueuePromptsRequest, cfg: BufferConfig) -> list[bytes]:
    """Checks an enqueue and returns the serialized prompts."""
    count(len(req.prompts), "prompts", cfg)
    if req.cursor_end <= req.cursor_start:
        raise InvalidArgument(
            f"cursor_end ({req.cursor_end}) must be above cursor_start ({req.cursor_start}): "
            "the range covers the dataset positions of these prompts"
        )
    if len(req.prompts) > req.cursor_end - req.cursor_start:
        raise InvalidArgument(
            f"{len(req.prompts)} prompts do not fit the cursor range [{req.cursor_start}, {req.cursor_end}); "
            "send at most one prompt per dataset position"
        )
    seen: set[str] = set()
    payloads = []
    for p in req.prompts:
        name(p.prompt_id, "prompt.prompt_id")
        if p.prompt_id in seen:
            raise InvalidArgument(f"prompt_id {p.prompt_id!r} appears twice in one enqueue; ids must be unique")
        seen.add(p.prompt_id)
        if not p.messages_json:
            raise InvalidArgument(f"prompt {p.prompt_id!r} has empty messages_json; send the chat JSON")
        if not req.cursor_start <= p.cursor < req.cursor_end:
            raise InvalidArgument(
                f"prompt {p.prompt_id!r} has cursor {p.cursor}, outside [{req.cursor_start}, {req.cursor_end})"
            )
        blob = p.SerializeToString()
        if len(blob) > cfg.max_prompt_bytes:
            raise InvalidArgument(
                f"prompt {p.prompt_id!r} is {len(blob)} bytes; the limit is {cfg.max_prompt_bytes} (shrink its images)"
            )
        payloads.append(blob)
    return payloads


def _sample(s: buffer_pb2.Sample, where: str, cfg: BufferConfig, arrays_checked: bool) -> None:
    n = len(s.response_token_ids)
    if n > cfg.max_tokens_per_sample:
        raise InvalidArgument(f"{where} has {n} response tokens; the limit is {cfg.max_tokens_per_sample}")
    if len(s.behaviour_logprobs) != n:
        raise InvalidArgument(
            f"{where} has {len(s.behaviour_logprobs)} behaviour_logprobs for {n} response tokens; send one per token"
        )
    if not arrays_checked:
        if n and np.array(s.response_token_ids, dtype=np.int64).min() < 0:  # numpy: one pass in C, not a Python loop
            raise InvalidArgument(f"{where} has a negative token id")
        logprobs = np.array(s.behaviour_logprobs, dtype=np.float64)
        if n and not (np.isfinite(logprobs).all() and logprobs.max() <= 1e-3):
            raise InvalidArgument(f"{where} has a behaviour log-prob that is not finite or is above 0")
    if not 0.0 <= s.accuracy <= 1.0:
        raise InvalidArgument(f"{where} has accuracy {s.accuracy}; it must be in [0, 1]")
    if not (math.isfinite(s.reward) and math.isfinite(s.format)):
        raise InvalidArgument(f"{where} has a reward or format score that is not finite")
    if s.finish_reason not in FINISH_REASONS:
        raise InvalidArgument(f"{where} has finish_reason {s.finish_reason!r}; use one of {FINISH_REASONS}")


def put(req: buffer_pb2.PutGroupRequest, cfg: BufferConfig, arrays_checked: bool = False) -> None:
    """Every field of one put; `arrays_checked`: the samples' token ids and log-probs already passed (`put_wire`)."""
    g = req.group
    name(req.worker_id, "worker_id")
    entry_id(req.claim_id, "claim_id")
    name(g.prompt_id, "group.prompt_id")
    if g.attempt < 1:
        raise InvalidArgument("group.attempt is 0; use the attempt of the claim (1 on first delivery)")
    expected = f"{g.prompt_id}#{g.attempt}"
    if g.group_id != expected:
        raise InvalidArgument(f"group.group_id is {g.group_id!r}; it must be prompt_id#attempt = {expected!r}")
    if g.prompt.prompt_id and g.prompt.prompt_id != g.prompt_id:
        raise InvalidArgument(f"group.prompt.prompt_id {g.prompt.prompt_id!r} differs from group.prompt_id")
    if not g.samples:
        raise InvalidArgument(f"group {g.group_id!r} has no samples; put at least one")
    if len(g.samples) > cfg.max_samples_per_group:
        raise InvalidArgument(f"group {g.group_id!r} has {len(g.samples)} samples; the limit is {cfg.max_samples_per_group}")
    if not g.prompt_token_ids:
        raise InvalidArgument(f"group {g.group_id!r} has no prompt_token_ids; send the prompt's tokens")
    if len(g.prompt_token_ids) > cfg.max_tokens_per_sample or min(g.prompt_token_ids) < 0:
        raise InvalidArgument(
            f"group {g.group_id!r} prompt_token_ids must be 1 to {cfg.max_tokens_per_sample} non-negative ids"
        )
    for i, s in enumerate(g.samples):
        _sample(s, f"group {g.group_id!r} sample {i}", cfg, arrays_checked)
    for field in ("generate_seconds", "reward_seconds", "created_unix"):
        v = getattr(g, field)
        if not (math.isfinite(v) and v >= 0):
            raise InvalidArgument(f"group {g.group_id!r} {field} is {v}; it must be a finite number >= 0")


def put_many(req: buffer_pb2.PutGroupsRequest, cfg: BufferConfig, arrays_checked: bool = False) -> None:
    """Every put of a PutGroups call; the first invalid one refuses the call, named by its index."""
    count(len(req.puts), "len(puts)", cfg)
    for i, p in enumerate(req.puts):
        try:
            put(p, cfg, arrays_checked)
        except InvalidArgument as e:
            raise InvalidArgument(f"puts[{i}]: {e}") from None


def sample(req: buffer_pb2.SampleGroupsRequest, cfg: BufferConfig) -> None:
    name(req.consumer, "consumer")
    count(req.num_groups, "num_groups", cfg)
    wait_ms(req.wait_ms, cfg)
    if not 0.0 <= req.filter_low <= req.filter_high <= 1.0:
        raise InvalidArgument(
            f"filter bounds [{req.filter_low}, {req.filter_high}] are invalid; use 0 <= filter_low <= filter_high <= 1"
        )
    if req.after_entry_id:
        entry_id(req.after_entry_id, "after_entry_id")
