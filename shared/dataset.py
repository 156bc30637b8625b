"""MM-Eureka JSONL datasets: `{"id", "message": <JSON chat string>, "answer"}` per line, images as
`file://` URIs or paths (relative ones resolve against the file's folder).

Bad lines are skipped with a sentence naming the line (bad JSON, no answer, missing image), so one
broken record never stops a run and the count of skipped lines is always reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eureka.v1 import common_pb2


@dataclass
class Record:
    id: str
    messages: list[dict[str, Any]]
    answer: str
    image_paths: list[Path]
    task: str = "default"


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one sentence per skipped line, naming it


def _image_path(ref: str, base: Path) -> Path:
    path = Path(ref[len("file://") :] if ref.startswith("file://") else ref)
    return path if path.is_absolute() else base / path


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def parse_record(obj: Any, base: Path, fallback_id: str) -> Record:
    """One record from a decoded JSON line; raises ValueError with what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("the line is not a JSON object")
    answer = obj.get("answer")
    if answer is None or str(answer).strip() == "":
        raise ValueError("no answer (add a non-empty \"answer\")")
    raw = obj.get("message", obj.get("messages"))
    if raw is None:
        raise ValueError("no \"message\" (the chat as a JSON string)")
    try:
        messages = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise ValueError(f"\"message\" is not valid JSON ({e.msg})") from e
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ValueError("\"message\" must be a list of {\"role\", \"content\"} objects")
    paths: list[Path] = []
    for m in messages:
        content = m.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image":
                ref = part.get("image") or part.get("image_url") or ""
                if not isinstance(ref, str) or not ref:
                    raise ValueError("an image part has no \"image\" path")
                path = _image_path(ref, base)
                if not _is_file(path):
                    raise ValueError(f"missing image {str(path)[:300]}")
                paths.append(path)
    return Record(
        id=str(obj.get("id", fallback_id)),
        messages=messages,
        answer=str(answer),
        image_paths=paths,
        task=str(obj.get("task") or "default"),
    )


def read_jsonl(path: str | Path) -> ReadResult:
    """All good records of an MM-Eureka JSONL file, and a sentence per skipped line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset {p} does not exist; pass an MM-Eureka JSONL file")
    result = ReadResult()
    with p.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                result.skipped.append(f"{p}:{n}: not UTF-8 (byte {e.start + 1}); save the file as UTF-8")
                continue
            except json.JSONDecodeError as e:
                result.skipped.append(f"{p}:{n}: bad JSON ({e.msg} at column {e.colno})")
                continue
            except RecursionError:
                result.skipped.append(f"{p}:{n}: JSON nested too deeply")
                continue
            try:
                result.records.append(parse_record(obj, p.parent, fallback_id=f"{p.stem}-{n}"))
            except ValueError as e:
                result.skipped.append(f"{p}:{n}: {e}")
    return result


def _strip_image_paths(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat with image parts reduced to {"type": "image"}: the bytes travel in Prompt.images."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = [{"type": "image"} if isinstance(p, dict) and p.get("type") == "image" else p for p in content]
        out.append({**m, "content": content})
    return out


def record_to_prompt(record: Record, prompt_id: str, cursor: int) -> common_pb2.Prompt:
    """A Prompt message with the record's images inlined as bytes."""
    return common_pb2.Prompt(
        prompt_id=prompt_id,
        messages_json=json.dumps(_strip_image_paths(record.messages)),
        answer=record.answer,
        images=[common_pb2.ImageRef(uri=str(p), data=p.read_bytes()) for p in record.image_paths],
        task=record.task,
        cursor=cursor,
    )
