"""Why collect drops an alt-text, as pure functions of the text (and its image's name and post):
each returns a (reason, detail) or None. The image checks and the duplicates, which need the
image's bytes, are in :mod:`mcmdpo.build.collect`."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# Reasons, in the order they are checked: the first that applies is the record's.
EMPTY = "empty_alt_text"
PLACEHOLDER = "placeholder_alt_text"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
DUPLICATE = "duplicate"
REASONS = (EMPTY, PLACEHOLDER, TOO_SHORT, TOO_LONG, MISSING_IMAGE, UNREADABLE_IMAGE, DUPLICATE)

# What people (and upload forms) write where no alt-text was written; compared after
# normalize_placeholder (lower case, no article, no surrounding punctuation).
PLACEHOLDERS = frozenset({
    "image", "images", "img", "photo", "photos", "photograph", "picture", "pictures", "pic", "pics", "alt", "alt text",
    "alttext", "alt-text", "alt tag", "screenshot", "screen shot", "screencap", "graphic", "figure", "fig", "illustration",
    "untitled", "untitled image", "no alt text", "no alt", "no description", "description", "image description",
    "photo description", "caption", "no caption", "placeholder", "attachment", "attached image", "media", "thumbnail",
    "gif", "video", "none", "n/a", "na", "null", "nil", "undefined", "todo", "tbd", "test", "blank", "empty", "-", "?",
})
ARTICLE = re.compile(r"^(?:an?|the|this is an?|this is the)\s+")
EDGE_PUNCTUATION = " \t\n.,;:!?\"'`()[]{}<>*_~"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff", "heic", "heif", "avif", "svg")
FILE_NAME = re.compile(r"^[\w\-. ()\[\]~+%]+\.(?:" + "|".join(IMAGE_EXTENSIONS) + r")$", re.IGNORECASE)
CAMERA_NAME = re.compile(r"^(?:img|dsc|dscn|dscf|pxl|mvimg|screenshot|photo|image)[_\- ]?\d[\d_\- ]*$", re.IGNORECASE)
IMAGE_PLACEHOLDER = "<image>"


def normalize_placeholder(text: str) -> str:
    text = " ".join(text.lower().split()).strip(EDGE_PUNCTUATION)
    return ARTICLE.sub("", text).strip(EDGE_PUNCTUATION)


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def placeholder_reason(alt_text: str, image_name: str | None, context: str) -> str | None:
    """Why ``alt_text`` stands in for alt-text rather than being one, or None."""
    stripped = alt_text.strip()
    if IMAGE_PLACEHOLDER in stripped:
        return f"holds the image placeholder {IMAGE_PLACEHOLDER}"
    if FILE_NAME.match(stripped) or CAMERA_NAME.match(stripped):
        return "a file name"
    if image_name:
        name = PurePosixPath(image_name.replace("\\", "/")).name
        if stripped.casefold() in (name.casefold(), PurePosixPath(name).stem.casefold()):
            return "the image's file name"
    normalized = normalize_placeholder(stripped)
    if normalized in PLACEHOLDERS or not normalized:
        return f"a placeholder ({stripped!r})"
    if context.strip() and _same_text(stripped, context):
        return "the post repeated verbatim"
    return None


def text_drop(alt_text: str | None, image_name: str | None, context: str, min_words: int,
              max_words: int) -> tuple[str, str | None] | None:
    """The (reason, detail) to drop a record for its alt-text alone, or None to keep it so far."""
    if alt_text is None or not alt_text.strip():
        return EMPTY, None
    detail = placeholder_reason(alt_text, image_name, context)
    if detail:
        return PLACEHOLDER, detail
    words = len(alt_text.split())
    if words < min_words:
        return TOO_SHORT, f"{words} word(s), fewer than --min_words {min_words}"
    if words > max_words:
        return TOO_LONG, f"{words} words, more than --max_words {max_words}"
    return None
