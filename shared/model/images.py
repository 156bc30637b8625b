"""Qwen2.5-VL image preprocessing without torchvision, step for step as HF's Qwen2VLImageProcessor (PIL backend).

RGB conversion (transparency composited on white) -> smart_resize to a multiple of patch*merge ->
bicubic resample (PIL, uint8) -> rescale 1/255 -> normalise with the CLIP mean/std -> patchify into
`pixel_values` (N, C*T*P*P), the frame repeated T times, and `image_grid_thw` (n_images, 3).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN, as Qwen2-VL uses
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 4 * 28 * 28  # the recipe's defaults (RecipeConfig.min_pixels / max_pixels, MM-Eureka's bounds)
MAX_PIXELS = 640 * 28 * 28


def smart_resize(
    height: int, width: int, factor: int = PATCH_SIZE * MERGE_SIZE, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Height and width divisible by `factor`, pixel count within [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio must be below 200, got {max(height, width) / min(height, width):.1f}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _to_rgb(image: Image.Image) -> Image.Image:
    from PIL import Image as PILImage

    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return PILImage.alpha_composite(PILImage.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _patchify(image: np.ndarray, patch_size: int, merge_size: int, temporal: int) -> tuple[np.ndarray, int, int]:
    channel, height, width = image.shape
    gh, gw = height // patch_size, width // patch_size
    p = image.reshape(channel, gh // merge_size, merge_size, patch_size, gw // merge_size, merge_size, patch_size)
    p = np.transpose(p, (1, 4, 2, 5, 0, 3, 6))  # (gh/m, gw/m, m, m, C, P, P)
    p = np.broadcast_to(p[:, :, :, :, :, None], (*p.shape[:5], temporal, *p.shape[5:]))
    return p.reshape(gh * gw, channel * temporal * patch_size * patch_size), gh, gw


def preprocess_images(
    images: list[Image.Image],
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values float32 (sum of h*w patches, 3*T*P*P), image_grid_thw int64 (n, 3)) for the images."""
    import torch
    from PIL import Image as PILImage

    if not images:
        raise ValueError("preprocess_images needs at least one image")
    mean = np.array(IMAGE_MEAN, dtype=np.float32)
    std = np.array(IMAGE_STD, dtype=np.float32)
    patches, grids = [], []
    for image in images:
        rgb = _to_rgb(image)
        h, w = smart_resize(rgb.height, rgb.width, patch_size * merge_size, min_pixels, max_pixels)
        resized = np.asarray(rgb.resize((w, h), resample=PILImage.Resampling.BICUBIC))  # (H, W, 3) uint8
        scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
        normed = ((scaled - mean) / std).transpose(2, 0, 1)  # channel-first, like the HF backend
        flat, gh, gw = _patchify(np.ascontiguousarray(normed, dtype=np.float32), patch_size, merge_size, temporal_patch_size)
        patches.append(flat)
        grids.append([1, gh, gw])
    return torch.from_numpy(np.concatenate(patches, axis=0)), torch.tensor(grids, dtype=torch.int64)


def image_token_count(grid_thw: torch.Tensor, merge_size: int = MERGE_SIZE) -> list[int]:
    """Placeholder tokens per image: t*h*w / merge_size**2."""
    return [int(t * h * w) // (merge_size**2) for t, h, w in grid_thw.tolist()]
