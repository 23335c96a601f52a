"""The README's instructions as a new user follows them."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def test_readme_says_how_its_python_commands_find_the_environment():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    first_bare = next(i for i, line in enumerate(lines) if re.match(r"\s{4}python ", line))
    activation = next(i for i, line in enumerate(lines) if line.strip() == "source .venv/bin/activate")
    assert activation < first_bare
