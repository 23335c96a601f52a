"""What the corrector and the judge share when they ask an OpenAI-compatible endpoint: the client
(:mod:`mcmdpo.eval.openai_client`, the one MMHal-Bench's judge uses), a reply cache in the output
folder (so a stage redone, e.g. with another guard setting, asks nothing twice, and requests in
flight when a run is killed are all that is lost), and several requests in flight at once with the
results kept in order."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from mcmdpo.build.options import BuildOptions, spec_target
from mcmdpo.eval.openai_client import ChatClient, ReplyCache, client_from_options

Item = TypeVar("Item")
Result = TypeVar("Result")
CACHE_FOLDER = "cache"


def endpoint_client(options: BuildOptions, spec: str, model_name: str, role: str) -> ChatClient:
    """The client of ``endpoint:URL``, with the options' key, timeout and attempts."""
    return client_from_options(spec_target(spec), model_name, options.api_key_env, options.request_timeout,
                               options.request_retries, role=role)


def reply_cache(options: BuildOptions, name: str) -> ReplyCache:
    """``OUT/cache/NAME.jsonl``."""
    path = Path(options.output_dir) / CACHE_FOLDER / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return ReplyCache(path)


def ordered_map(function: Callable[[Item], Result], items: Iterable[Item], workers: int) -> Iterator[Result]:
    """``function`` over ``items`` in ``workers`` threads, results in input order, at most
    2 x workers items started ahead of the one yielded; what was not started is cancelled when
    the caller stops early (an error)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        window: deque = deque()
        try:
            for item in items:
                window.append(pool.submit(function, item))
                if len(window) >= 2 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()
