"""MMHal-Bench's LLM judge behind an OpenAI-compatible chat-completions endpoint, and a cache of
its replies that makes judging resumable: the project's one endpoint client
(:mod:`mcmdpo.eval.openai_client`, shared with the preference-data builder) under the judge's
names.

``JudgeClient.reply(prompt)`` POSTs ``{url}/chat/completions`` with one user message and
temperature 0, bearer key from an environment variable when set. Timeouts, connection errors,
429 and 5xx answers are retried with exponential backoff; other HTTP errors (a bad key, an
unknown model) stop at once. ``JudgeCache`` appends each reply as one JSON line, flushed to disk,
keyed by what was asked, so a rerun asks only what is not there yet.
"""

from __future__ import annotations

from pathlib import Path

from mcmdpo.eval import openai_client
from mcmdpo.eval.openai_client import ChatClient, ChatError, ReplyCache, completions_url, request_key

# Seconds before the second attempt; doubled for each further one (read when a client is made).
BACKOFF_S = openai_client.BACKOFF_S

JudgeClient = ChatClient
JudgeError = ChatError

__all__ = ["BACKOFF_S", "JudgeCache", "JudgeClient", "JudgeError", "client_from_options", "completions_url", "request_key"]


def client_from_options(url: str, model: str, key_env: str, timeout: float, attempts: int) -> ChatClient:
    return openai_client.client_from_options(url, model, key_env, timeout, attempts, role="judge", backoff_s=BACKOFF_S)


class JudgeCache(ReplyCache):
    """Judge replies by request key, one JSON line each, appended and synced as they come
    (:class:`~mcmdpo.files.AppendLog`: a partial last line is cut away on opening)."""

    def __init__(self, path: Path):
        super().__init__(path, kind="judge cache", verb="judge")
