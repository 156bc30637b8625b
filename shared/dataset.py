"""MM-Eureka JSONL datasets: `{"id", "message": <JSON chat string>, "answer"}` per line.

Image parts take every form `qwen_vl_utils.process_vision_info` reads: `{"type": "image", "image": REF}`,
`{"image": REF}`, `{"type": "image_url", "image_url": REF}` (REF may also be `{"url": REF}`), each with
optional `min_pixels` / `max_pixels` or `resized_height` / `resized_width`. REF is a `file://` URI or a
path (a relative one is looked up under `image_root`, then the JSONL's folder, then the working
directory) or a `data:image/...;base64,` URI. Remote `http(s)` images are refused: download them first.

Every record is checked at load: images readable, chat renderable. A bad line is skipped with a sentence
naming the line (bad JSON, no answer, missing or unreadable image, a chat that does not render), so one
broken record never stops a run and every skipped line is reported with its reason.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eureka.v1 import common_pb2


@dataclass(frozen=True)
class RecordImage:
    """One image of a record: a file or decoded `data:` bytes, and the part's own size keys (0 = unset)."""

    path: Path | None
    data: bytes = b""
    min_pixels: int = 0
    max_pixels: int = 0
    resized: tuple[int, int] | None = None  # (height, width) asked for by the part

    def read(self) -> bytes:
        return self.data if self.path is None else self.path.read_bytes()


@dataclass
class Record:
    id: str
    messages: list[dict[str, Any]]  # image parts reduced to {"type": "image"}, text parts to {"type": "text", ...}
    answer: str
    images: list[RecordImage]
    task: str = "default"
    difficulty: int = 0  # 0: not given (the v3 small world writes 1-3)

    @property
    def image_paths(self) -> list[Path]:
        return [im.path for im in self.images if im.path is not None]


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one sentence per skipped line, naming it


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _data_uri(ref: str) -> bytes:
    head, sep, payload = ref.partition(",")
    if not sep or not head.endswith(";base64"):
        raise ValueError(f"data URI {ref[:40]}... is not base64 ('data:image/png;base64,<bytes>')")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"data URI {ref[:40]}... has invalid base64 ({e})") from e


def _resolve(ref: str, bases: list[Path]) -> Path:
    raw = ref[len("file://"):] if ref.startswith("file://") else ref
    path = Path(raw)
    candidates = [path] if path.is_absolute() else [b / path for b in bases]
    for c in candidates:
        if _is_file(c):
            return c
    looked = "; ".join(str(c)[:200] for c in candidates)
    raise ValueError(f"missing image {raw[:200]} (looked for {looked}); fix the path or pass --image-root")


def _size_key(part: dict[str, Any], key: str) -> int:
    value = part.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"image part {key} must be a positive whole number, got {value!r:.40}")
    return value


def _image(part: dict[str, Any], bases: list[Path]) -> RecordImage:
    ref = part["image"] if "image" in part else part.get("image_url")
    if isinstance(ref, dict):  # OpenAI style {"image_url": {"url": ...}}
        ref = ref.get("url")
    if not isinstance(ref, str) or not ref:
        raise ValueError("an image part has no \"image\" path (a file path, file:// or data: URI)")
    if ref.startswith(("http://", "https://")):
        raise ValueError(f"remote image {ref[:200]} is not fetched; download it and give its path")
    min_px, max_px = _size_key(part, "min_pixels"), _size_key(part, "max_pixels")
    if min_px and max_px and min_px > max_px:
        raise ValueError(f"image part min_pixels ({min_px}) is above max_pixels ({max_px})")
    resized = None
    if "resized_height" in part or "resized_width" in part:
        h, w = _size_key(part, "resized_height"), _size_key(part, "resized_width")
        if not h or not w:
            raise ValueError("image part needs both resized_height and resized_width")
        resized = (h, w)
    if ref.startswith("data:"):
        image = RecordImage(None, _data_uri(ref), min_px, max_px, resized)
    else:
        image = RecordImage(_resolve(ref, bases), b"", min_px, max_px, resized)
    _check_readable(image, ref)
    return image


def _check_readable(image: RecordImage, ref: str) -> None:
    """Open the image header (cheap: no pixels decoded) so an unreadable file is refused at load."""
    from PIL import Image, UnidentifiedImageError

    name = ref[:40] + "..." if ref.startswith("data:") else str(image.path)[:200]
    try:
        with Image.open(io.BytesIO(image.data) if image.path is None else image.path) as img:
            w, h = img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"image {name} is not a readable image file ({type(e).__name__})") from e
    if min(w, h) < 1 or max(w, h) / min(w, h) > 200:
        raise ValueError(f"image {name} is {w}x{h}: the aspect ratio must be below 200")


def _parts(content: Any, bases: list[Path], images: list[RecordImage]) -> str | list[dict[str, Any]]:
    """A message's content with image parts reduced to {"type": "image"} (their images appended to `images`)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError("a message's \"content\" must be a string or a list of parts")
    out: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            out.append({"type": "text", "text": part})
        elif not isinstance(part, dict):
            raise ValueError(f"message part {part!r:.60} is neither text nor image")
        elif "video" in part or part.get("type") == "video":
            raise ValueError("video parts are not supported; use images")
        elif "image" in part or "image_url" in part or part.get("type") in ("image", "image_url"):
            images.append(_image(part, bases))
            out.append({"type": "image"})
        elif isinstance(part.get("text"), str) and part.get("type", "text") == "text":
            out.append({"type": "text", "text": part["text"]})
        else:
            raise ValueError(f"message part {json.dumps(part)[:80]} is neither text nor image; "
                             "use {\"type\": \"text\", \"text\": ...} or {\"type\": \"image\", \"image\": ...}")
    return out


def parse_record(obj: Any, bases: list[Path], fallback_id: str) -> Record:
    """One record from a decoded JSON line, images looked up under `bases`; ValueError says what is wrong."""
    from shared.model.prompts import render_chat

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
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                 and "content" in m for m in messages):
        raise ValueError("\"message\" must be a list of {\"role\", \"content\"} objects")
    if not messages:
        raise ValueError("\"message\" is an empty chat; add a user message with the question")
    images: list[RecordImage] = []
    chat = [{"role": m["role"], "content": _parts(m["content"], bases, images)} for m in messages]
    render_chat(chat, [1] * len(images))  # raises with a sentence when the chat cannot be rendered
    difficulty = obj.get("difficulty", 0)
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or not 0 <= difficulty <= 100:
        raise ValueError("\"difficulty\" must be a whole number 0-100 when given")
    return Record(
        id=str(obj.get("id", fallback_id)),
        messages=chat,
        answer=str(answer),
        images=images,
        task=str(obj.get("task") or "default"),
        difficulty=difficulty,
    )


def read_jsonl(path: str | Path, image_root: Path | None = None) -> ReadResult:
    """All good records of an MM-Eureka JSONL file, and a sentence per skipped line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset {p} does not exist; pass an MM-Eureka JSONL file")
    if image_root is not None and not image_root.is_dir():
        raise FileNotFoundError(f"image root {image_root} is not a folder; pass the folder the image paths start from")
    bases = [*([image_root] if image_root is not None else []), p.parent, Path.cwd()]
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
                result.records.append(parse_record(obj, bases, fallback_id=f"{p.stem}-{n}"))
            except ValueError as e:
                result.skipped.append(f"{p}:{n}: {e}")
    return result


def _image_bytes(image: RecordImage) -> bytes:
    """The image's bytes; resized first (PNG) when its part asks for a size within the model's pixel bounds."""
    data = image.read()
    if not (image.min_pixels or image.max_pixels or image.resized):
        return data
    from PIL import Image

    from shared.model.images import MAX_PIXELS, MIN_PIXELS, MERGE_SIZE, PATCH_SIZE, smart_resize

    factor = PATCH_SIZE * MERGE_SIZE
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if image.resized:
            h, w = smart_resize(*image.resized, factor)
        else:
            low = min(max(image.min_pixels or MIN_PIXELS, MIN_PIXELS), MAX_PIXELS)
            high = min(max(image.max_pixels or MAX_PIXELS, low), MAX_PIXELS)
            h, w = smart_resize(img.height, img.width, factor, low, high)
        h, w = smart_resize(h, w, factor)  # a size the model's own preprocessing keeps as it is
        if (h, w) == (img.height, img.width):
            return data
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
        out = io.BytesIO()
        img.resize((w, h), resample=Image.Resampling.BICUBIC).save(out, format="PNG")
        return out.getvalue()


def record_to_prompt(record: Record, prompt_id: str, cursor: int) -> common_pb2.Prompt:
    """A Prompt message with the record's images inlined as bytes."""
    return common_pb2.Prompt(
        prompt_id=prompt_id,
        messages_json=json.dumps(record.messages),
        answer=record.answer,
        images=[common_pb2.ImageRef(uri=str(im.path or "data:"), data=_image_bytes(im)) for im in record.images],
        task=record.task,
        cursor=cursor,
    )
