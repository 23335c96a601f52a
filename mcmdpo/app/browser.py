"""Drive the app in a real browser, offline: start ``python -m mcmdpo.app`` (the comparison page,
or ``annotate``) on a free port, open its page in headless Chromium (Debian's ``chromium`` through
pip's ``playwright``, no browser download) and work the page as a user does. Used by the browser
tests and by ``scripts/app_screenshot.py``; needs the ``dev`` extra (playwright)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

CHROMIUM_NAMES = ("chromium", "chromium-browser")
NUMBER = r"[-+]?\d+(?:\.\d+)?"


def find_chromium() -> str | None:
    """The Chromium binary: ``$MCMDPO_CHROMIUM``, else ``chromium`` on the PATH (Debian's package)."""
    if os.environ.get("MCMDPO_CHROMIUM"):
        return os.environ["MCMDPO_CHROMIUM"]
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class AppServer:
    """A running app: its process, its address and what it has printed so far."""

    process: subprocess.Popen
    url: str
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def answers(self) -> bool:
        """Whether the server answers an HTTP request for its page."""
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False


@contextmanager
def serve(models: Sequence[str | Path], port: int | None = None, extra_args: Sequence[str] = (), timeout: float = 180) -> Iterator[AppServer]:
    """``python -m mcmdpo.app --model M ... --port P`` as a subprocess, until it serves its page."""
    port = port or free_port()
    arguments = [*[a for m in models for a in ("--model", str(m))], "--port", str(port), *extra_args]
    with serve_app(arguments, port, timeout) as server:
        yield server


@contextmanager
def serve_app(arguments: Sequence[str], port: int, timeout: float = 180) -> Iterator[AppServer]:
    """``python -m mcmdpo.app ARGUMENTS`` (the comparison page, or ``annotate ...``) as a
    subprocess serving on ``port``, until it prints its ``ready in`` line; stopped afterwards
    (terminated, killed if it will not stop)."""
    command = [sys.executable, "-m", "mcmdpo.app", *map(str, arguments)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    server = AppServer(process, f"http://127.0.0.1:{port}/")
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            server.lines.append(line)
            if line.startswith("ready in "):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start (exit code {process.poll()}):\n{server.output}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def headless_chromium(chromium: str) -> Iterator[Any]:
    """A playwright ``Browser``: ``chromium`` started headless (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()


def block_other_addresses(page: Any, url: str) -> list[str]:
    """Block every request of ``page`` to an address other than ``url``'s; the list the blocked
    ones are added to (the app must need none)."""
    blocked: list[str] = []
    origin = url.rstrip("/")

    def route(request_route: Any) -> None:
        target = request_route.request.url
        if target.startswith(origin) or target.startswith(("data:", "blob:")):
            request_route.continue_()
        else:
            blocked.append(target)
            request_route.abort()

    page.route("**/*", route)
    return blocked


@contextmanager
def open_page(url: str, chromium: str, viewport: tuple[int, int] = (1400, 1000)) -> Iterator[tuple[Any, list[str]]]:
    """(page, blocked): ``url`` in headless Chromium, every request to another address blocked and
    listed in ``blocked`` (the app must need none)."""
    with headless_chromium(chromium) as browser:
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        blocked = block_other_addresses(page, url)
        page.goto(url)
        page.wait_for_selector("#submit", timeout=60_000)
        yield page, blocked


def upload(page: Any, path: str | Path) -> None:
    """Put ``path`` into the image box (clearing the file already there, as a user does)."""
    clear = page.locator("#image-upload button[aria-label=Clear]")
    if clear.count():
        clear.first.click()
    page.set_input_files("#image-upload input[type=file]", str(path))


def fill(page: Any, elem_id: str, text: str) -> None:
    page.fill(f"#{elem_id} textarea", text)


MESSAGE_TEXT = "#message [data-testid=markdown]"


def message(page: Any) -> str:
    return page.inner_text(MESSAGE_TEXT).strip()


def wait_for_message(page: Any, pattern: str, previous: str | None = None, timeout_s: float = 60) -> str:
    """The page's message once the page is idle (no request pending on the message) and its text
    matches ``pattern`` (a regular expression) and, where ``previous`` is given, differs from it
    (the message before the request)."""
    handle = page.wait_for_function(
        """([selector, pattern, previous]) => {
            const tracker = document.querySelector('#message [data-testid=status-tracker]');
            const text = (document.querySelector(selector)?.innerText ?? '').trim();
            const idle = !tracker || tracker.classList.contains('hide');
            return idle && new RegExp(pattern).test(text) && (previous === null || text !== previous) ? text : false;
        }""",
        arg=[MESSAGE_TEXT, pattern, previous], timeout=timeout_s * 1000,
    )
    return handle.json_value()


def upload_and_wait(page: Any, path: str | Path, timeout_s: float = 30) -> str:
    """Upload ``path`` and return the page's verdict on it (ready, or why not)."""
    before = message(page)
    upload(page, path)
    return wait_for_message(page, r"ready|⚠", before, timeout_s)


def write_alt_text(page: Any, post: str | None = None, timeout_s: float = 120) -> str:
    """Type ``post`` (None: keep the box's text), press Write alt-text, and return the message once
    every model has answered (or the refusal)."""
    if post is not None:
        fill(page, "post", post)
    before = message(page)
    page.click("#submit")
    return wait_for_message(page, r"models answered|⚠", before, timeout_s)


def answers(page: Any, count: int) -> list[tuple[str, str]]:
    """(alt-text, margins line) of each of the ``count`` models."""
    return [(page.input_value(f"#alt-text-{n} textarea"), page.inner_text(f"#margins-{n} [data-testid=markdown]").strip()) for n in range(count)]


def margins_of(line: str) -> dict[str, float]:
    """The numbers of a margins line: image_margin, context_margin, logp."""
    found = {key: re.search(rf"{label}\s*({NUMBER})", line) for key, label in
             (("image_margin", "image margin"), ("context_margin", "context margin"), ("logp", "log p"))}
    return {key: float(match.group(1)) for key, match in found.items() if match}


def score_typed(page: Any, alt_text: str, timeout_s: float = 60) -> tuple[str, str]:
    """Type an alt-text, press Score, and return (message, the score table's text)."""
    fill(page, "typed", alt_text)
    before = message(page)
    page.click("#score")
    return wait_for_message(page, r"Scored under|⚠", before, timeout_s), page.inner_text("#scores [data-testid=markdown]").strip()
