"""The corrector's and the judge's prompts: text files with ``{name}`` slots, the defaults shipped
as package data in ``mcmdpo/build/prompts/`` and replaceable by the user's own file. Only the
slots are replaced, so a prompt may hold other braces (a JSON example) as they are."""

from __future__ import annotations

import re
from pathlib import Path

from mcmdpo.build.options import OptionsError

PROMPT_FOLDER = Path(__file__).with_name("prompts")
# name -> (default file, slots a prompt must have, slots it may have)
PROMPTS = {
    "correction": ("correction.txt", ("alt_text",), ("context",)),
    "judge": ("judge.txt", ("context", "first", "second"), ()),
}


def prompt_file(name: str, given: str | None) -> Path:
    return Path(given) if given else PROMPT_FOLDER / PROMPTS[name][0]


def read_prompt(name: str, given: str | None) -> str:
    """The prompt's text, or an :class:`OptionsError` naming the file and what it lacks."""
    path = prompt_file(name, given)
    flag = f"--{name}_prompt {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OptionsError(f"{flag}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise OptionsError(f"{flag}: cannot be read as UTF-8 text ({error})") from None
    missing = [slot for slot in PROMPTS[name][1] if "{" + slot + "}" not in text]
    if missing:
        raise OptionsError(f"{flag}: the prompt must hold {', '.join('{' + slot + '}' for slot in missing)}")
    return text


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by its value, all at once (a value holding a
    slot's name is not filled in turn)."""
    slots = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return slots.sub(lambda match: values[match.group(1)], template).strip()
