"""`POST /get_reward` as OpenRLHF and MM-Eureka's remote-reward clients call it: the body they send, the golds
they carry, the response inside the decoded prompt+response text, and the reply every one of them can turn
into tensors.

The clients checked (services/reward/README.md, "OpenRLHF and MM-Eureka clients") turn each top-level reply
field into a tensor or read `rewards` / `scores` as numbers, so the reply holds numeric per-item lists only.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictStr

from services.reward.scoring import BadRequest, Result

_ASSISTANT = "<|im_start|>assistant"
# End-of-turn and padding markers of the Qwen (ChatML), InternVL / Llama (`</s>`) and DeepSeek families.
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "</s>", "<｜end▁of▁sentence｜>")


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward body. Golds come in `labels` (OpenRLHF, MM-Eureka's Qwen branches) or, without
    `labels`, in `prompts[i]["answer"]` (MM-Eureka's InternVL branch)."""

    model_config = ConfigDict(extra="allow")
    query: list[StrictStr]
    prompts: list[Any] | None = None
    labels: list[Any] | None = None


def response_from_query(query: str) -> str:
    """The response part of a decoded prompt+response: after the last assistant marker, end markers removed."""
    pos = query.rfind(_ASSISTANT)
    if pos == -1:
        return ""
    response = query[pos + len(_ASSISTANT):]
    for marker in END_MARKERS:
        response = response.replace(marker, "")
    return response.strip()


def gold_text(label: Any) -> str:
    """A label as the gold string: text as sent, a number as its digits (`3`, `2.5`); anything else (null,
    true/false, a list or an object) is the empty gold, scored per item as unparseable."""
    if isinstance(label, str):
        return label
    if isinstance(label, bool) or not isinstance(label, (int, float)):
        return ""
    if isinstance(label, float):
        if not math.isfinite(label):
            return ""
        if label.is_integer() and abs(label) < 1e16:
            return str(int(label))
        return repr(label)
    return str(label)


def golds(body: OpenRLHFRequest) -> list[str]:
    """One gold per query, from `labels` or else `prompts[i]["answer"]`; BadRequest when neither carries them."""
    if body.labels is not None:
        raw = body.labels
    elif body.prompts is not None and all(isinstance(p, dict) and "answer" in p for p in body.prompts):
        raw = [p["answer"] for p in body.prompts]
    else:
        raise BadRequest("send the gold answers as 'labels' (one per query; strings or numbers), "
                         "or as 'answer' in each of 'prompts'")
    if len(raw) != len(body.query):
        raise BadRequest(f"'query' has {len(body.query)} entries but there are {len(raw)} gold answers; "
                         "send one per query")
    return [gold_text(label) for label in raw]


def reply(results: list[Result]) -> dict[str, list[float]]:
    """Numeric per-item lists only: `rewards` (accuracy + weight x format), `scores` (accuracy, 0..1, what
    OpenRLHF's dynamic filter reads), `accuracy_rewards` and `format_rewards` (0/1)."""
    return {
        "rewards": [r.total for r in results],
        "scores": [r.accuracy for r in results],
        "accuracy_rewards": [r.accuracy for r in results],
        "format_rewards": [r.format for r in results],
    }
