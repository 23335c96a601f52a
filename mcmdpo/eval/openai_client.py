"""One client for every OpenAI-compatible chat-completions endpoint the project asks (standard
library only): MMHal-Bench's judge, and the preference-data builder's corrector and judge
(:mod:`mcmdpo.build`).

``ChatClient.reply(content)`` POSTs ``{url}/chat/completions`` with one user message (text, or
text and images as OpenAI's content parts) and temperature 0, a bearer key when one is given.
Timeouts, connection errors, 408/409/429 and 5xx answers are retried with exponential backoff;
other HTTP errors (a bad key, an unknown model) stop at once. ``ReplyCache`` appends each reply as
one JSON line, synced to disk, keyed by what was asked (:func:`request_key`), so a rerun asks only
what is not there yet: the cache is what makes asking resumable.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from mcmdpo.files import AppendLog, DamagedLogError

# Seconds before the second attempt; doubled for each further one, up to MAX_BACKOFF_S.
BACKOFF_S = 2.0
MAX_BACKOFF_S = 60.0
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_ATTEMPTS = 5
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"

# A user message: its text, or OpenAI's content parts ({"type": "text", ...}, {"type": "image_url", ...}).
Content = Union[str, list[dict[str, Any]]]


class ChatError(ValueError):
    """The endpoint could not be asked or answered unusably. A ValueError, so that the command
    lines report it as an error message rather than a traceback."""


class _Retryable(Exception):
    """One failed attempt worth repeating."""


def completions_url(base_url: str) -> str:
    """``{base_url}/chat/completions`` (a base URL already ending with it is taken as it is)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def image_part(image: Any) -> dict[str, Any]:
    """A PIL image as an OpenAI ``image_url`` content part (a PNG data URL)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@dataclass
class ChatClient:
    """An OpenAI-compatible endpoint asked at temperature 0. ``role`` names it in errors ("the
    judge at URL failed ...")."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    attempts: int = DEFAULT_ATTEMPTS
    backoff_s: float = BACKOFF_S
    role: str = "endpoint"

    @property
    def endpoint(self) -> str:
        return completions_url(self.base_url)

    def reply(self, content: Content) -> str:
        """The endpoint's reply to one user message; a :class:`ChatError` naming the endpoint
        once every attempt has failed."""
        attempts = max(1, self.attempts)
        last = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1)))
            try:
                return self._ask(content)
            except _Retryable as error:
                last = str(error)
        raise ChatError(f"the {self.role} at {self.endpoint} failed {attempts} time(s) in a row; last: {last}")

    def _ask(self, content: Content) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0.0})
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.endpoint, body.encode("utf-8"), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = _excerpt(error.read())
            if error.code in RETRYABLE_STATUS or error.code >= 500:
                raise _Retryable(f"HTTP {error.code} {error.reason}: {detail}") from None
            raise ChatError(f"the {self.role} at {self.endpoint} answered HTTP {error.code} {error.reason}: {detail}") from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as error:
            raise _Retryable(f"{type(error).__name__}: {getattr(error, 'reason', error)}") from None
        try:
            answer = json.loads(raw)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
            raise _Retryable(f"not a chat-completions answer: {_excerpt(raw)}") from None
        if not isinstance(answer, str):
            raise _Retryable(f"the answer's message has no text content: {_excerpt(raw)}")
        return answer


def _excerpt(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def client_from_options(url: str, model: str, key_env: str, timeout: float, attempts: int, role: str = "endpoint",
                        backoff_s: float | None = None) -> ChatClient:
    """A client whose API key is read from the environment variable ``key_env`` (none when unset)."""
    return ChatClient(url, model, os.environ.get(key_env) or None, timeout, attempts,
                      BACKOFF_S if backoff_s is None else backoff_s, role)


def request_key(model: str, content: Content) -> str:
    """What identifies a request: the model and the whole message (which holds the record)."""
    return hashlib.sha256(json.dumps([model, content], ensure_ascii=False).encode("utf-8")).hexdigest()


class ReplyCache:
    """Replies by request key, one JSON line each, appended and synced as they come
    (:class:`~mcmdpo.files.AppendLog`: a partial last line is cut away on opening). ``add`` may be
    called from several threads. ``kind`` names such a file in errors, ``verb`` what a rerun
    without it would do again."""

    def __init__(self, path: Path, kind: str = "reply cache", verb: str = "ask"):
        self.log = AppendLog(path)
        self.entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        try:
            records = self.log.read()
        except DamagedLogError as error:
            raise ChatError(f"{error}; move the file away to {verb} everything again") from None
        for number, entry in enumerate(records, start=1):
            if not isinstance(entry.get("key"), str) or not isinstance(entry.get("reply"), str):
                raise ChatError(f"{path}, entry {number}: not a {kind} entry (needs 'key' and 'reply' strings); "
                                f"move the file away to {verb} everything again")
            self.entries[entry["key"]] = entry

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.log.append([entry])
            self.entries[entry["key"]] = entry

    def reply(self, client: ChatClient, content: Content, **fields: Any) -> str:
        """The cached reply to ``content``, or the client's, cached with ``fields`` beside it."""
        key = request_key(client.model, content)
        found = self.get(key)
        if found is not None:
            return found["reply"]
        answer = client.reply(content)
        self.add({"key": key, "model": client.model, **fields, "reply": answer})
        return answer
