"""Our preprocessing equals HF's Qwen2-VL image processor: stored references, the PIL processor live, and
the torchvision processor live where torchvision is installed (the GPU machine)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).with_name("data")


def _reference_images() -> list[Image.Image]:
    spec = importlib.util.spec_from_file_location("make_image_refs", DATA / "make_image_refs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.reference_images()


def _hf_input(images: list[Image.Image]) -> list[Image.Image]:
    """Transparency composited on white before HF sees it: transformers >= 5.23 does that itself, older ones
    (5.20 in the GPU lock) drop the alpha channel; vLLM composites on white before its HF processor either way."""
    from shared.model.images import _to_rgb

    return [_to_rgb(im) for im in images]


BOUNDS = {"shortest_edge": 4 * 28 * 28, "longest_edge": 640 * 28 * 28}  # the recipe's, preprocess_images' defaults


def _random_images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    sizes = [(112, 112), (100, 150), (37, 300), (1200, 1000), (20, 20)]
    imgs = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    imgs.append(Image.fromarray(rng.integers(0, 256, (60, 70, 4), dtype=np.uint8), "RGBA"))
    imgs.append(Image.fromarray(rng.integers(0, 256, (60, 70), dtype=np.uint8), "L"))
    return imgs


def test_matches_stored_hf_reference() -> None:
    from shared.model.images import preprocess_images

    ref = np.load(DATA / "image_refs.npz")
    pixel_values, grid = preprocess_images(_reference_images())
    assert grid.tolist() == ref["image_grid_thw"].tolist()
    assert pixel_values.dtype.is_floating_point and pixel_values.shape == ref["pixel_values"].shape
    np.testing.assert_allclose(pixel_values.numpy(), ref["pixel_values"], rtol=0, atol=1e-6)


def test_matches_hf_pil_processor_live() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from shared.model.images import preprocess_images

    images = _random_images()
    ref = Qwen2VLImageProcessorPil(size=BOUNDS)(_hf_input(images), return_tensors="np")
    pixel_values, grid = preprocess_images(images)
    assert grid.tolist() == ref["image_grid_thw"].tolist()
    np.testing.assert_array_equal(pixel_values.numpy(), ref["pixel_values"])


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="torchvision is not installed here (its CPU wheel pulls CUDA); this runs on the GPU machine",
)
def test_matches_hf_torchvision_processor_live() -> None:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from shared.model.images import preprocess_images

    images = _reference_images()
    ref = Qwen2VLImageProcessor(size=BOUNDS)(_hf_input(images), return_tensors="np")
    pixel_values, grid = preprocess_images(images)
    assert grid.tolist() == ref["image_grid_thw"].tolist()
    # torchvision's bicubic resize rounds differently from PIL's by at most a grey level here and there.
    diff = np.abs(pixel_values.numpy() - ref["pixel_values"])
    assert diff.mean() < 0.02, f"mean abs diff {diff.mean():.4f} on {sys.platform}"


def test_smart_resize_rules() -> None:
    from shared.model.images import smart_resize

    assert smart_resize(80, 100) == (84, 112)
    h, w = smart_resize(4000, 3000)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 28 * 28 * 1280
    h, w = smart_resize(10, 10)
    assert h * w >= 56 * 56
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000)
    from shared.model.images import preprocess_images

    with pytest.raises(ValueError, match="at least one image"):
        preprocess_images([])
