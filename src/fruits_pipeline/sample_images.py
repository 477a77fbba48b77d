"""Procedurally drawn fruit-like images: the demo's input and the tests' fallback data.

A user's machine has no Fruits-360 copy, so the demo draws its own: a few classes of round,
coloured "fruits" with a stem and a highlight, on a white background, 100x100 JPEGs in
one folder per class (the dataset's own layout).

Run ``python -m fruits_pipeline.sample_images DIR`` to write a sample tree.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

#: Class name -> (base RGB colour, relative width, relative height).
FRUIT_CLASSES = {
    "Apple Red": ((190, 30, 40), 1.0, 0.95),
    "Banana": ((235, 205, 60), 1.5, 0.55),
    "Kiwi": ((120, 90, 50), 1.0, 0.8),
    "Lemon": ((245, 225, 70), 1.05, 0.85),
    "Orange": ((245, 140, 30), 1.0, 1.0),
    "Plum": ((90, 30, 80), 0.85, 0.9),
}


def draw_fruit(kind: str, rng: np.random.Generator, size: int = 100) -> Image.Image:
    """Return one RGB image of a fruit of class ``kind``, jittered by ``rng``."""
    colour, width, height = FRUIT_CLASSES[kind]
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    scale = size * rng.uniform(0.32, 0.42)
    cx, cy = size / 2 + rng.uniform(-6, 6), size / 2 + rng.uniform(-4, 6)
    rx, ry = scale * width / 1.2, scale * height
    jitter = rng.integers(-25, 26, size=3)
    body = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter, strict=False))
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=body)
    shade = tuple(int(c * 0.7) for c in body)
    draw.ellipse((cx - rx * 0.2, cy + ry * 0.2, cx + rx * 0.9, cy + ry * 0.95), fill=shade)
    draw.ellipse((cx - rx * 0.95, cy - ry * 0.95, cx + rx * 0.6, cy + ry * 0.6), fill=body)
    light = tuple(min(255, int(c * 1.3) + 30) for c in body)
    hx, hy = cx - rx * 0.45, cy - ry * 0.45
    draw.ellipse((hx - rx * 0.18, hy - ry * 0.12, hx + rx * 0.18, hy + ry * 0.12), fill=light)
    draw.line(
        (cx, cy - ry, cx + rng.uniform(-5, 5), cy - ry - size * 0.1), fill=(80, 50, 20), width=3
    )
    angle = float(rng.uniform(-30, 30))
    image = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))


def draw_fruit_batch(count: int, seed: int, size: int = 224) -> np.ndarray:
    """Return ``count`` seeded fruit images as a uint8 ``(count, size, size, 3)`` array."""
    rng = np.random.default_rng(seed)
    kinds = sorted(FRUIT_CLASSES)
    batch = np.empty((count, size, size, 3), dtype=np.uint8)
    for index in range(count):
        image = draw_fruit(kinds[index % len(kinds)], rng).resize((size, size))
        batch[index] = np.asarray(image)
    return batch


def write_sample_tree(root: str, per_class: int = 12, seed: int = 0) -> int:
    """Write ``per_class`` JPEGs for every class under ``root/<class>/`` and return the count.

    Idempotent: an image that already exists is left as it is.
    """
    rng = np.random.default_rng(seed)
    written = 0
    for kind in sorted(FRUIT_CLASSES):
        folder = os.path.join(root, kind)
        os.makedirs(folder, exist_ok=True)
        for index in range(per_class):
            image = draw_fruit(kind, rng)
            path = os.path.join(folder, f"{index}_100.jpg")
            if not os.path.exists(path):
                image.save(path, quality=92)
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder to write the class folders into")
    parser.add_argument("--per-class", type=int, default=12, help="images per class (12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)
    count = write_sample_tree(args.root, args.per_class, args.seed)
    print(f"sample images: {count} JPEGs in {len(FRUIT_CLASSES)} classes under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
