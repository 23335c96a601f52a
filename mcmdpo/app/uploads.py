"""What the page accepts from a user: an uploaded image and the texts, checked before any model
sees them, each refusal a message that says what is wrong and, for a size, by how much."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # a 40-megapixel photo; PIL itself refuses 2 x 89.5 M as a decompression bomb
DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_MAX_TEXT_CHARS = 20_000


class InputError(ValueError):
    """A request the page cannot answer, with the message the page shows."""


def read_image(path: str | Path | None, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None) -> Image.Image:
    """The uploaded image at ``path`` decoded in full, as RGB. Its size is read from the header
    first, so an image of more than ``max_pixels`` pixels (a decompression bomb among them) is
    refused before it is decoded."""
    if path is None or str(path) == "":
        raise InputError("No image: drop an image (PNG, JPEG, WebP, ...) into the image box first.")
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputError(f"The upload {name} cannot be read: {error.strerror or error}.") from None
    if size == 0:
        raise InputError(f"The upload {name} is empty (0 bytes).")
    if max_bytes is not None and size > max_bytes:
        raise InputError(f"The upload {name} is {size / 1e6:.1f} MB, more than the limit of {max_bytes / 1e6:.1f} MB (--max_upload_mb).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below says it with the numbers
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InputError(
                        f"The image {name} is {width:,} x {height:,} = {width * height:,} pixels, more than the limit of "
                        f"{max_pixels:,} pixels (--max_pixels): a decompression bomb or simply too large; scale it down."
                    )
                image.load()
                return image.convert("RGB")
    except InputError:
        raise
    except Image.DecompressionBombError as error:  # over PIL's own hard limit, which the header already shows
        raise InputError(f"The image {name} is too large ({error}); this page takes at most {max_pixels:,} pixels (--max_pixels).") from None
    except UnidentifiedImageError:
        raise InputError(
            f"The upload {name} ({size:,} bytes) is not an image this page can read: not a PNG, JPEG, WebP, GIF, BMP or "
            "other format PIL decodes, whatever its name says."
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"The image {name} cannot be fully decoded (truncated or damaged: {error}).") from None


def require_text(text: str | None, what: str, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """``text`` stripped, refused when empty or longer than ``max_chars`` characters."""
    stripped = (text or "").strip()
    if not stripped:
        raise InputError(f"The {what} is empty: paste or type it first.")
    if len(stripped) > max_chars:
        raise InputError(f"The {what} is {len(stripped):,} characters long, more than the limit of {max_chars:,}.")
    return stripped
