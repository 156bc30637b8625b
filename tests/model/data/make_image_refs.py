"""One-off: store HF Qwen2VLImageProcessorPil outputs for a few drawn images as the preprocessing reference.

Run: .venv/bin/python tests/model/data/make_image_refs.py  (writes tests/model/data/image_refs.npz)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def reference_images() -> list[Image.Image]:
    """Drawn (compressible) images covering RGB, RGBA over white, greyscale, upscale and odd sizes."""
    a = Image.new("RGB", (100, 80), "white")
    ImageDraw.Draw(a).ellipse((10, 10, 50, 60), fill=(200, 30, 40))
    ImageDraw.Draw(a).rectangle((55, 5, 95, 40), fill=(20, 90, 200))
    b = Image.new("RGBA", (61, 47), (0, 0, 0, 0))
    ImageDraw.Draw(b).polygon([(5, 40), (30, 3), (58, 44)], fill=(10, 160, 60, 180))
    c = Image.linear_gradient("L").resize((200, 30))
    d = Image.new("RGB", (230, 150), (250, 250, 240))
    draw = ImageDraw.Draw(d)
    for i, h in enumerate((40, 90, 120, 65)):
        draw.rectangle((20 + 50 * i, 145 - h, 50 + 50 * i, 145), fill=(40 * i, 120, 200 - 40 * i))
    draw.text((5, 5), "12 + 7", fill="black")
    return [a, b, c, d]


def main() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    images = reference_images()
    out = Qwen2VLImageProcessorPil()(images, return_tensors="np")
    path = Path(__file__).with_name("image_refs.npz")
    np.savez_compressed(path, pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"])
    print(f"wrote {path}: pixel_values {out['pixel_values'].shape}, grids {out['image_grid_thw'].tolist()}")


if __name__ == "__main__":
    main()
