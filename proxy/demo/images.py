"""Real JPEG photos of about 2-3 MB, made on the spot.

Noise compresses badly, which is what makes a JPEG of this size: each image is
a coloured field mixed with random noise, its size varied by its index.
"""

from __future__ import annotations

import io
import os

from PIL import Image, ImageDraw

# Width/height ratio 4:3, 70 % noise, quality 93: widths of 1750-2050 px give
# about 2.0-3.0 MB (measured with Pillow 13).
_WIDTHS = (1750, 1850, 1950, 2050)


def make_jpeg(index: int, *, width: int | None = None) -> bytes:
    """A JPEG for photo ``index``: deterministic size, random content."""
    w = width or _WIDTHS[index % len(_WIDTHS)]
    h = w * 3 // 4
    hue = (index * 47) % 360
    tint = Image.new("HSV", (w, h), (hue * 255 // 360, 160, 200)).convert("RGB")
    noise = Image.frombytes("RGB", (w, h), os.urandom(w * h * 3))
    img = Image.blend(tint, noise, 0.7)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w // 3, h // 8), fill=(20, 20, 20))
    draw.text((w // 40, h // 40), f"photo {index + 1}", fill=(255, 255, 255), font_size=h // 14)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=93)
    return out.getvalue()
