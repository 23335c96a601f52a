"""An LLM judge behind an OpenAI-compatible chat-completions endpoint (standard library only), and
a cache of its replies that makes judging resumable.

``JudgeClient.reply(prompt)`` POSTs ``{url}/chat/completions`` with one user message and
temperature 0, bearer key from an environment variable when set. Timeouts, connection errors,
429 and 5xx answers are retried with exponential backoff; other HTTP errors (a bad key, an
unknown model) stop at once. ``JudgeCache`` appends each reply as one JSON line, flushed to disk,
keyed by what was asked, so a rerun asks only what is not there yet.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcmdpo.files import AppendLog, DamagedLogError

# Seconds before the second attempt; doubled for each further one, up to MAX_BACKOFF_S.
BACKOFF_S = 2.0
MAX_BACKOFF_S = 60.0
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx


class JudgeError(ValueError):
    """The judge could not be asked or answered unusably. A ValueError, so that get_score reports
    it as an error message rather than a traceback."""


class _Retryable(Exception):
    """One failed attempt worth repeating."""


def completions_url(base_url: str) -> str:
    """``{base_url}/chat/completions`` (a base URL already ending with it is taken as it is)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


@dataclass
class JudgeClient:
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    attempts: int = 5

    @property
    def endpoint(self) -> str:
        return completions_url(self.base_url)

    def reply(self, prompt: str) -> str:
        """The judge's reply to one user message; a :class:`JudgeError` naming the endpoint once
        every attempt has failed."""
        attempts = max(1, self.attempts)
        last = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (attempt - 1)))
            try:
                return self._ask(prompt)
            except _Retryable as error:
                last = str(error)
        raise JudgeError(f"the judge at {self.endpoint} failed {attempts} time(s) in a row; last: {last}")

    def _ask(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.0})
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
            raise JudgeError(f"the judge at {self.endpoint} answered HTTP {error.code} {error.reason}: {detail}") from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as error:
            raise _Retryable(f"{type(error).__name__}: {getattr(error, 'reason', error)}") from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
            raise _Retryable(f"not a chat-completions answer: {_excerpt(raw)}") from None
        if not isinstance(content, str):
            raise _Retryable(f"the answer's message has no text content: {_excerpt(raw)}")
        return content


def _excerpt(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def client_from_options(url: str, model: str, key_env: str, timeout: float, attempts: int) -> JudgeClient:
    return JudgeClient(url, model, os.environ.get(key_env) or None, timeout, attempts)


def request_key(model: str, prompt: str) -> str:
    """What identifies a judgement: the judge model and the whole prompt (which holds the record)."""
    return hashlib.sha256(json.dumps([model, prompt], ensure_ascii=False).encode("utf-8")).hexdigest()


class JudgeCache:
    """Judge replies by request key, one JSON line each, appended and synced as they come
    (:class:`~mcmdpo.files.AppendLog`: a partial last line is cut away on opening)."""

    def __init__(self, path: Path):
        self.log = AppendLog(path)
        self.entries: dict[str, dict[str, Any]] = {}
        try:
            records = self.log.read()
        except DamagedLogError as error:
            raise JudgeError(f"{error}; move the file away to judge everything again") from None
        for number, entry in enumerate(records, start=1):
            if not isinstance(entry.get("key"), str) or not isinstance(entry.get("reply"), str):
                raise JudgeError(f"{path}, entry {number}: not a judge cache entry (needs 'key' and 'reply' strings); "
                                 "move the file away to judge everything again")
            self.entries[entry["key"]] = entry

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def add(self, entry: dict[str, Any]) -> None:
        self.log.append([entry])
        self.entries[entry["key"]] = entry
