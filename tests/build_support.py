"""What the preference-data builder's tests share: small data sets cut from the session's
synthetic data, options for a quick build, an OpenAI-compatible server on 127.0.0.1 that answers
as a test scripts it, and builds done once per test session."""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from mcmdpo.build import BuildOptions, build

_SESSION: dict[tuple[str, str], Any] = {}


def train_two_mcmdpo_steps(checkpoint: Path, pairs_file: Path, image_folder: Path, folder: Path) -> list[dict[str, Any]]:
    """Two MCM-DPO steps on a pairs file, as a user trains on what they built or exported: the
    logged entries of the two steps."""
    from mcmdpo.train.cli import main as train_main

    argv = ["--stage", "mcmdpo", "--model_name_or_path", str(checkpoint), "--data_path", str(pairs_file),
            "--image_folder", str(image_folder), "--output_dir", str(folder / "mcmdpo"),
            "--reference_cache_dir", str(folder / "cache"), "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--logging_steps", "1", "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true",
            "--dataloader_num_workers", "0", "--seed", "0", "--plot", "false"]
    assert train_main(argv) == 0
    history = json.loads((folder / "mcmdpo" / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "loss" in entry]


def once(tmp_path_factory, name: str, make: Callable[[Path], Any]) -> Any:
    """``make(folder)`` once per test session, whichever module asks first."""
    key = (str(tmp_path_factory.getbasetemp()), name)
    if key not in _SESSION:
        _SESSION[key] = make(tmp_path_factory.mktemp(name))
    return _SESSION[key]


def sft_records(synthetic_dir: Path, count: int, start: int = 0) -> list[dict]:
    return json.loads((synthetic_dir / "sft_train.json").read_text())[start:start + count]


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def quick_options(data_path: Path | None, image_folder: Path | None, output_dir: Path, sampler: Path | None = None,
                  **settings: Any) -> BuildOptions:
    """A build that runs in seconds on the tiny model: few, short candidates. No data path or image
    folder: a build continuing from collect's file."""
    values: dict[str, Any] = dict(data_path=data_path and str(data_path), image_folder=image_folder and str(image_folder),
                                  output_dir=str(output_dir), quiet=True)
    if sampler is not None:
        values.update(sampler_model=str(sampler), num_candidates=3, max_new_tokens=6)
    values.update(settings)
    return BuildOptions(**values)


def copy_stages(source: Path, target: Path, *stages: str) -> Path:
    """A new output folder holding ``source``'s files of ``stages`` (a build to continue)."""
    target.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        shutil.copy(source / f"{stage}.jsonl", target / f"{stage}.jsonl")
    return target


def read_stage_lines(path: Path) -> list[dict]:
    """A stage file's records (its header and footer left out)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if "mcmdpo_build_stage" not in line and "mcmdpo_build_complete" not in line]


def prepared(tmp_path_factory, tiny_checkpoint: Path, synthetic_dir: Path, count: int = 8) -> Path:
    """An output folder whose collect and correct stages are done on ``count`` SFT records (a
    sampler's starting point), once per session; copy its files before writing into it."""
    def make(folder: Path) -> Path:
        data = write_json(folder / "sft.json", sft_records(synthetic_dir, count))
        build(quick_options(data, synthetic_dir / "image", folder / "out", stages=["collect", "correct"]), echo=None)
        return folder / "out"

    return once(tmp_path_factory, f"prepared_{count}", make)


class FakeChatServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1: ``answer(body)`` gives the reply
    to each request (the request body as JSON); ``failures`` lists call numbers answered with
    HTTP 500 instead (the client retries them). Every request is kept."""

    def __init__(self, answer: Callable[[dict], str]):
        self.answer = answer
        self.requests: list[dict] = []
        self.failures: set[int] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    call = len(server.requests)
                    server.requests.append(body | {"path": self.path, "authorization": self.headers.get("Authorization")})
                if call in server.failures:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                payload = {"id": f"c{call}", "object": "chat.completion", "model": body["model"], "created": int(time.time()),
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": server.answer(body)},
                                        "finish_reason": "stop"}]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def message_text(body: dict) -> str:
    """The text of a request's user message (its text parts joined)."""
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else "\n".join(part["text"] for part in content if part["type"] == "text")
