"""A corpus of MM-Eureka-format records in every variant MM-Eureka's own loader (qwen_vl_utils) reads, loaded by
`read_jsonl` and rendered into model inputs; the refused ones refused at load with their sentences."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from shared.dataset import read_jsonl, record_to_prompt


def _png(width: int, height: int, colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def _record(rid: str, content: list | str, answer: object = "3", system: str | None = None) -> str:
    chat = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return json.dumps({"id": rid, "message": json.dumps(chat), "answer": answer})


Q = {"type": "text", "text": "How many circles?"}


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """data/ holds the JSONL and data/img/a.png; the working directory holds images/d.png and images/e.png
    (the K12 evaluation's layout); roots/extra/f.png is reachable only through an image root."""
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    (data / "img").mkdir(parents=True)
    (cwd / "images").mkdir(parents=True)
    (tmp_path / "roots" / "extra").mkdir(parents=True)
    (data / "img" / "a.png").write_bytes(_png(100, 80))
    (cwd / "images" / "d.png").write_bytes(_png(64, 64, "blue"))
    (cwd / "images" / "e.png").write_bytes(_png(90, 60, "green"))
    (tmp_path / "roots" / "extra" / "f.png").write_bytes(_png(56, 56))
    (data / "img" / "not-an-image.png").write_bytes(b"hello")
    (data / "img" / "thin.png").write_bytes(_png(1, 300))
    old = Path.cwd()
    os.chdir(cwd)
    try:
        yield tmp_path, data / "d.jsonl"
    finally:
        os.chdir(old)


def _corpus(root: Path) -> tuple[list[str], list[str]]:
    a = root / "data" / "img" / "a.png"
    b64 = "data:image/png;base64," + base64.b64encode(_png(80, 60)).decode()
    good = [
        _record("abs-file-uri", [{"type": "image", "image": f"file://{a}"}, Q]),
        _record("abs-path", [{"type": "image", "image": str(a)}, Q]),
        _record("rel-to-jsonl", [{"type": "image", "image": "img/a.png"}, Q]),
        _record("rel-file-uri-cwd", [{"type": "image", "image": "file://images/d.png"}, Q]),
        _record("rel-path-cwd", [{"type": "image", "image": "images/e.png"}, Q]),
        _record("base64", [{"type": "image", "image": b64}, Q]),
        _record("no-type", [{"image": "img/a.png"}, Q]),
        _record("image-url", [{"type": "image_url", "image_url": "img/a.png"}, Q]),
        _record("image-url-openai", [{"type": "image_url", "image_url": {"url": b64}}, Q]),
        _record("two-images", [{"type": "image", "image": "img/a.png"}, {"type": "image", "image": "images/d.png"}, Q]),
        _record("text-only", "What is 1 + 2?"),
        _record("text-parts-no-type", [{"text": "What is 1 + 2?"}]),
        _record("int-answer", [{"type": "image", "image": "img/a.png"}, Q], answer=3),
        _record("pixels", [{"type": "image", "image": "img/a.png", "max_pixels": 28 * 28 * 6}, Q]),
        _record("min-pixels", [{"type": "image", "image": "images/d.png", "min_pixels": 28 * 28 * 16}, Q]),
        _record("resized", [{"type": "image", "image": "img/a.png", "resized_height": 56, "resized_width": 84}, Q]),
        _record("own-system", [Q], system="Answer in one word."),
    ]
    refused = [
        (_record("http", [{"type": "image", "image": "https://example.com/a.png"}, Q]), "is not fetched; download it"),
        (_record("missing", [{"type": "image", "image": "img/nope.png"}, Q]), "missing image img/nope.png (looked for"),
        (_record("bad-b64", [{"type": "image", "image": "data:image/png;base64,@@@"}, Q]), "invalid base64"),
        (_record("not-b64", [{"type": "image", "image": "data:image/png,abc"}, Q]), "is not base64"),
        (_record("not-image", [{"type": "image", "image": "img/not-an-image.png"}, Q]), "not a readable image"),
        (_record("thin", [{"type": "image", "image": "img/thin.png"}, Q]), "aspect ratio"),
        (_record("no-ref", [{"type": "image"}, Q]), "has no \"image\" path"),
        (_record("video", [{"type": "video", "video": "v.mp4"}, Q]), "video parts are not supported"),
        (_record("odd-part", [{"type": "audio", "audio": "x.wav"}, Q]), "neither text nor image"),
        (_record("bad-pixels", [{"type": "image", "image": "img/a.png", "max_pixels": "many"}, Q]), "max_pixels"),
        (_record("pixels-crossed", [{"type": "image", "image": "img/a.png", "min_pixels": 9000, "max_pixels": 100}, Q]),
         "min_pixels (9000) is above max_pixels (100)"),
        (json.dumps({"id": "assistant-only", "answer": "1",
                     "message": json.dumps([{"role": "assistant", "content": "hi"}])}), "no user message"),
        (json.dumps({"id": "empty-chat", "answer": "1", "message": "[]"}), "empty chat"),
    ]
    return good, refused


def test_every_variant_loads_and_renders(world, tiny) -> None:
    from shared.model.prompts import build_prompt_inputs

    root, path = world
    good, refused = _corpus(root)
    path.write_text("\n".join(good + [line for line, _ in refused]) + "\n")
    result = read_jsonl(path)
    ids = [r.id for r in result.records]
    assert ids == [json.loads(line)["id"] for line in good], result.skipped
    _, tok = tiny
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    grids = {}
    for i, rec in enumerate(result.records):
        prompt = record_to_prompt(rec, f"t:{i}", i)
        inputs = build_prompt_inputs(prompt, tok)
        n_images = len(prompt.images)
        grids[rec.id] = [] if inputs.image_grid_thw is None else inputs.image_grid_thw.tolist()
        assert len(grids[rec.id]) == n_images
        assert inputs.input_ids.count(pad) == sum(t * h * w // 4 for t, h, w in grids[rec.id])
    assert grids["abs-file-uri"] == grids["rel-to-jsonl"] == grids["no-type"] == grids["image-url"] == [[1, 6, 8]]
    assert grids["two-images"] == [[1, 6, 8], [1, 4, 4]] and grids["text-only"] == []
    assert grids["pixels"] == [[1, 4, 4]]  # max_pixels 6 x 28 x 28: 100x80 shrinks to 56x56
    assert grids["min-pixels"] == [[1, 8, 8]]  # min_pixels 16 x 28 x 28: 64x64 grows to 112x112
    assert grids["resized"] == [[1, 4, 6]]
    by_id = {r.id: r for r in result.records}
    assert by_id["int-answer"].answer == "3"
    assert by_id["rel-path-cwd"].image_paths == [root / "cwd" / "images" / "e.png"]
    assert json.loads(record_to_prompt(by_id["base64"], "t", 0).messages_json)[0]["content"][0] == {"type": "image"}
    assert len(result.skipped) == len(refused)
    for n, (sentence, (_, fragment)) in enumerate(zip(result.skipped, refused), start=len(good) + 1):
        assert sentence.startswith(f"{path}:{n}: ") and fragment in sentence, sentence


def test_image_root_is_searched_first(world) -> None:
    root, path = world
    path.write_text(_record("root", [{"type": "image", "image": "extra/f.png"}, Q]) + "\n")
    assert "pass --image-root" in read_jsonl(path).skipped[0]
    records = read_jsonl(path, image_root=root / "roots").records
    assert records[0].image_paths == [root / "roots" / "extra" / "f.png"]
    with pytest.raises(FileNotFoundError, match="image root"):
        read_jsonl(path, image_root=root / "nowhere")
