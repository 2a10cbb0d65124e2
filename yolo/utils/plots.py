"""Pictures of a run: results.png (the results.csv curves, matplotlib Agg) and image mosaics with boxes drawn
by Pillow."""
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .results import RESULTS_COLUMNS, read_results

# Columns plotted against epoch (everything in results.csv except the epoch itself).
PLOTTED = [c for c in RESULTS_COLUMNS if c != "epoch"]


def plot_results(csv_path, png_path=None):
    """results.csv -> results.png, one small panel per column. Epochs that were not evaluated (NaN) are
    skipped, not drawn as zeros."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's global backend alone

    csv_path = Path(csv_path)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    results = read_results(csv_path)
    epochs = np.array([r["epoch"] for r in results], dtype=float)
    ncols = 5
    nrows = math.ceil(len(PLOTTED) / ncols)
    fig = Figure(figsize=(3 * ncols, 2.4 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols)
    for ax, name in zip(axes.ravel(), PLOTTED):
        y = np.array([r[name] for r in results], dtype=float)
        ok = np.isfinite(y)
        ax.plot(epochs[ok], y[ok], marker=".", linewidth=1.5, markersize=5)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(PLOTTED):]:
        ax.axis("off")
    fig.tight_layout()
    # Atomic, like the checkpoints: a failed write (a full disk) leaves the previous picture, not a 0-byte file.
    tmp = png_path.with_name(f".{png_path.name}.tmp{os.getpid()}")
    try:
        fig.savefig(tmp, dpi=150, format="png")
        os.replace(tmp, png_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return png_path


def _palette(n):
    """n distinct, saturated RGB colours (golden-ratio hue steps)."""
    import colorsys

    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.85, 0.95)) for i in range(max(n, 1))]


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_mosaic(images, boxes, path, names=None, max_images=16, max_size=1920):
    """Tile up to max_images images (float (B,3,H,W) in [0,1]) and draw boxes on them.

    boxes: one (n, 5 or 6) tensor per image in that image's pixels: x1, y1, x2, y2, [conf,] cls.
    Labels read 'name' for ground truth and 'name 0.87' for predictions."""
    images = images[:max_images].detach().float().cpu().clamp(0, 1)
    b, _, h, w = images.shape
    ncols = math.ceil(math.sqrt(b))
    nrows = math.ceil(b / ncols)
    scale = min(1.0, max_size / max(ncols * w, nrows * h))
    tw, th = max(int(w * scale), 1), max(int(h * scale), 1)
    canvas = Image.new("RGB", (ncols * tw, nrows * th), (114, 114, 114))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, th // 24))
    colours = _palette(len(names) if names else 80)
    for i in range(b):
        x0, y0 = (i % ncols) * tw, (i // ncols) * th
        tile = Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        canvas.paste(tile.resize((tw, th)) if scale != 1 else tile, (x0, y0))
        for det in (boxes[i] if i < len(boxes) else []):
            det = [float(v) for v in det]
            x1, y1, x2, y2 = (v * scale for v in det[:4])
            cls = int(det[-1])
            colour = colours[cls % len(colours)]
            draw.rectangle([x0 + x1, y0 + y1, x0 + x2, y0 + y2], outline=colour, width=max(1, th // 160))
            label = names[cls] if names and 0 <= cls < len(names) else str(cls)
            if len(det) == 6:
                label += f" {det[4]:.2f}"
            draw.text((x0 + x1 + 1, y0 + y1 + 1), label, fill=colour, font=font)
        draw.rectangle([x0, y0, x0 + tw - 1, y0 + th - 1], outline=(255, 255, 255))
    path = Path(path)
    canvas.save(path, quality=90)
    return path


def targets_to_boxes(targets, batch_size, height, width):
    """Trainer targets (n,6) [img, cls, xc, yc, w, h] normalised -> per-image (k,5) xyxy pixels + cls."""
    out = []
    t = targets.detach().float().cpu()
    for i in range(batch_size):
        ti = t[t[:, 0] == i]
        xc, yc, bw, bh = ti[:, 2] * width, ti[:, 3] * height, ti[:, 4] * width, ti[:, 5] * height
        out.append(torch.stack([xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2, ti[:, 1]], 1))
    return out
