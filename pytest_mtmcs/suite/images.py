"""Safe image handling: suites are untrusted data.

Images are checked once when a suite loads (decodes, is not a decompression bomb) and decoded
lazily when a model needs them. Pillow is imported inside the functions: collection of a text-only
suite does not pay for it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

# Far above any benchmark image (MTMCS-Bench and SafeMT are under 4 Mpx), far below what would
# exhaust memory when decoded.
MAX_PIXELS = 40_000_000


class ImageProblem(ValueError):
    """The image cannot be used; the message says why, without a location (callers add it)."""


def verify_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Checks that `data` is a decodable image of sane size; returns (width, height).

    Reads the header for the size first, so a decompression bomb is refused before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageProblem("the image file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageProblem(
                    f"image of {width}x{height} pixels exceeds the {max_pixels:,}-pixel limit "
                    "(possible decompression bomb)"
                )
            img.verify()
    except ImageProblem:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageProblem(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise ImageProblem("not a readable image (unknown or corrupt format)") from None
    except Exception as exc:
        raise ImageProblem(f"corrupt image: {exc}") from None
    # verify() does not decode pixel data; a truncated stream only fails on load().
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:
        raise ImageProblem(f"corrupt image: {exc}") from None
    return width, height


def open_image(data: bytes) -> Image.Image:
    """Decodes verified image bytes to an RGB Pillow image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")
