"""Fixtures for model tests: an untrained tiny checkpoint written once per session, and a sample image."""

from __future__ import annotations

import io
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.io import make_random_tiny

    return make_random_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path):
    from shared.model.io import load_model, load_tokenizer

    return load_model(tiny_dir), load_tokenizer(tiny_dir)


@pytest.fixture(scope="session")
def png():
    """A function making a small PNG with a coloured circle."""
    return png_bytes


def png_bytes(width: int = 100, height: int = 80, colour: str = "red") -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(img).ellipse((10, 10, 40, 40), fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
