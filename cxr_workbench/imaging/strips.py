"""Image strips: tensors in [-1, 1] as uint8 arrays and as one RGB picture with the box drawn
(paper Fig. 3/5 layout)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from cxr_workbench.imaging.masks import Box

__all__ = ["BOX_COLOUR", "to_uint8", "display_scale", "strip_image", "tile"]

BOX_COLOUR = (40, 220, 80)  # the paper draws the region of interest in green


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] (or [N, H, W]) in [-1, 1] -> [N, H, W] uint8 (channels averaged)."""
    x = images.detach().float().cpu()
    if x.ndim == 4:
        x = x.mean(1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def tile(images: np.ndarray, cols: int, gap: int = 0, fill: int = 0) -> np.ndarray:
    """uint8 images [N, H, W] tiled ``cols`` a row, ``gap`` pixels of ``fill`` between them:
    [rows * (H + gap) - gap, cols * (W + gap) - gap]."""
    n, h, w = images.shape
    rows = -(-n // cols)
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), fill, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = images[i]
    return grid


def display_scale(resolution: int, size: int = 256) -> float:
    """The scale that shows a ``resolution`` px image at ``size`` px on screen (4 for 64 px, 1/4 for
    1024 px): every generator's images look the same size in the widgets and strips."""
    return size / resolution


def strip_image(rows: list[torch.Tensor], box: Box | None = None, scale: float | None = None, gap: int = 2,
                labels: list[str] | None = None) -> Image.Image:
    """Rows of images (each [n, C, H, W], same H, W) as one RGB picture, each tile ``scale`` times
    its size (default: 192 px tiles, whatever the size; blocky pixels when enlarged, area-averaged
    when reduced), box drawn on every tile, each row named by ``labels`` in a left margin when given."""
    tiles = [to_uint8(r) for r in rows]
    h, w = tiles[0].shape[1:]
    scale = display_scale(w, 192) if scale is None else scale
    cols = max(len(t) for t in tiles)
    H, W = max(1, round(h * scale)), max(1, round(w * scale))
    resample = Image.NEAREST if scale >= 1 else Image.BOX
    margin = 0 if not labels else 8 + 7 * max(len(t) for t in labels)
    canvas = Image.new("RGB", (margin + cols * (W + gap) - gap, len(tiles) * (H + gap) - gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, label in enumerate(labels or []):
        draw.text((4, r * (H + gap) + H // 2 - 5), label, fill=(0, 0, 0))
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            x0, y0 = margin + c * (W + gap), r * (H + gap)
            canvas.paste(Image.fromarray(tile).resize((W, H), resample).convert("RGB"), (x0, y0))
            if box is not None:
                s = W / box.resolution
                draw.rectangle([x0 + box.x0 * s, y0 + box.y0 * s, x0 + box.x1 * s - 1, y0 + box.y1 * s - 1],
                               outline=BOX_COLOUR, width=max(1, int(scale // 2)))
    return canvas
