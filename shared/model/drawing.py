"""Drawing primitives of the small world: a 112x112 image as a 4x4 grid of 28-pixel cells, one object per cell."""

from __future__ import annotations

from PIL import ImageDraw, ImageFont

SIZE = 112
CELL = 28
GRID = SIZE // CELL
COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (30, 160, 60), "yellow": (230, 200, 20)}
SHAPES = ("circle", "square", "triangle")
LETTERS = "ABCD"


def text_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def cell_box(k: int, pad: int = 4) -> tuple[int, int, int, int]:
    r, c = divmod(k, GRID)
    return c * CELL + pad, r * CELL + pad, (c + 1) * CELL - pad, (r + 1) * CELL - pad


def draw_shape(draw: ImageDraw.ImageDraw, k: int, shape: str, colour: str) -> None:
    x0, y0, x1, y1 = cell_box(k)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
