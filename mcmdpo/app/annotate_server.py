"""The annotation page's web server: the standard library's threaded HTTP server, one thread per
request, each with its own database connection (:class:`~mcmdpo.app.annotation_store.AnnotationQueue`).

Routes: the page (``/``, ``/annotate.js``, ``/annotate.css``, from ``annotate_static/``), a
record's image (``/image?record=ID``: the file the record names under the image folder, or the
image kept in the database; no path ever comes from a request), and the queue's three calls,
POSTed as JSON (``/api/next``, ``/api/answer``, ``/api/undo``), each answering with the
annotator's progress and the record to show. With credentials set, every request needs them
(HTTP basic authentication); a path holding ``..`` is refused before anything else."""

from __future__ import annotations

import base64
import hmac
import io
import json
import socket
import sys
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from PIL import Image, UnidentifiedImageError

from mcmdpo.app.annotation_store import AnnotationQueue, AnswerError, Progress
from mcmdpo.app.candidates_file import leaves_folder
from mcmdpo.build.annotations import AnnotationError, read_image

STATIC_FOLDER = Path(__file__).with_name("annotate_static")
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/annotate.js": ("annotate.js", "text/javascript; charset=utf-8"),
    "/annotate.css": ("annotate.css", "text/css; charset=utf-8"),
}
MAX_BODY_BYTES = 64 * 1024  # an answer is a choice and at most one corrected alt-text
REALM = "mcmdpo annotation"
# The page loads nothing from elsewhere, runs only its own script, and may not be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ServerSettings:
    image_folder: Path
    credentials: tuple[str, str] | None = None  # (user, password) every request must give


class AnnotationServer(ThreadingHTTPServer):
    daemon_threads = True  # a request in flight never keeps the process from stopping

    def __init__(self, address: tuple[str, int], queue: AnnotationQueue, settings: ServerSettings):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.queue = queue
        self.settings = settings
        super().__init__(address, AnnotationHandler)


def progress_json(progress: Progress) -> dict[str, Any]:
    shown = progress.record
    record = None if shown is None else {
        "record_id": shown.record_id, "context": shown.context, "texts": list(shown.texts), "again": shown.again,
        "image": f"/image?record={quote(shown.record_id, safe='')}",
    }
    return {"annotator": progress.annotator, "answered": progress.answered, "left": progress.left, "record": record,
            "message": progress.message}


class AnnotationHandler(BaseHTTPRequestHandler):
    server: AnnotationServer
    server_version = "mcmdpo-annotate"

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    # ------------------------------------------------------------ replies

    def reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, status: int, data: dict[str, Any]) -> None:
        self.reply(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")
        self.reply(status, body, "application/json; charset=utf-8", headers)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per answer instead (handle_api), not one per request

    # ------------------------------------------------------------ checks every request passes

    def allowed(self) -> bool:
        """Credentials (when set), then the path: False once a refusal has been sent."""
        credentials = self.server.settings.credentials
        if credentials is not None and not self.authenticated(credentials):
            self.refuse(HTTPStatus.UNAUTHORIZED, "credentials needed (the --auth the server was started with)",
                        {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
            return False
        path = unquote(urlsplit(self.path).path)
        if ".." in path.replace("\\", "/").split("/"):
            self.refuse(HTTPStatus.FORBIDDEN, "refused: a path with '..' (nothing outside the page and its images is served)")
            return False
        return True

    def authenticated(self, credentials: tuple[str, str]) -> bool:
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # Both compared in full whatever the first gives: the time taken tells nothing.
        same_user = hmac.compare_digest(user.encode("utf-8"), credentials[0].encode("utf-8"))
        same_password = hmac.compare_digest(password.encode("utf-8"), credentials[1].encode("utf-8"))
        return bool(sep) and same_user and same_password

    # ------------------------------------------------------------ routes

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's names)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        try:
            if not self.allowed():
                return
            split = urlsplit(self.path)
            if split.path in STATIC_FILES:
                name, content_type = STATIC_FILES[split.path]
                self.reply(HTTPStatus.OK, (STATIC_FOLDER / name).read_bytes(), content_type)
            elif split.path == "/image":
                self.send_image(parse_qs(split.query).get("record", [""])[0])
            else:
                self.refuse(HTTPStatus.NOT_FOUND, "not found")
        except Exception:  # noqa: BLE001 (the server keeps serving; the console has the traceback)
            traceback.print_exc()
            self.refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (the server's console has the details)")

    def do_POST(self) -> None:  # noqa: N802
        try:
            if not self.allowed():
                return
            path = urlsplit(self.path).path
            if path not in ("/api/next", "/api/answer", "/api/undo"):
                self.refuse(HTTPStatus.NOT_FOUND, "not found")
                return
            body = self.json_body()
            if body is not None:
                self.handle_api(path, body)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            self.refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (the server's console has the details)")

    def json_body(self) -> dict[str, Any] | None:
        """The request's JSON object, or None once a refusal has been sent. JSON only: a form of
        another site cannot post one without the browser asking this server first."""
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            self.refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self.refuse(HTTPStatus.BAD_REQUEST, f"a request body of 1 to {MAX_BODY_BYTES:,} bytes, please")
            return None
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self.refuse(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return None
        return body

    def handle_api(self, path: str, body: dict[str, Any]) -> None:
        queue = self.server.queue
        annotator = body.get("annotator")
        try:
            if path == "/api/next":
                progress = queue.current(annotator)
            elif path == "/api/undo":
                progress = queue.undo(annotator)
                print(f"{progress.annotator}: {progress.message}", file=sys.stderr, flush=True)
            else:
                record_id, choice, corrected = body.get("record_id"), body.get("choice"), body.get("corrected_text")
                if not isinstance(record_id, str) or not isinstance(choice, str) or not isinstance(corrected, (str, type(None))):
                    raise AnswerError("An answer names its record_id and choice (text), and optionally a corrected_text.")
                progress = queue.answer(annotator, record_id, choice, corrected)
                print(f"{progress.annotator}: record {record_id}: {choice}{' (corrected)' if corrected else ''}; "
                      f"{progress.answered} answered", file=sys.stderr, flush=True)
        except AnswerError as error:
            self.refuse(HTTPStatus.BAD_REQUEST, str(error))
            return
        self.reply_json(HTTPStatus.OK, progress_json(progress))

    def send_image(self, record_id: str) -> None:
        """The record's image: its file under the image folder (checked again: the database may
        come from another run), or the bytes the database keeps."""
        item = self.server.queue.item(record_id) if record_id else None
        if item is None:
            self.refuse(HTTPStatus.NOT_FOUND, "no such record")
            return
        if item.image_sha256 is not None:
            try:
                data = read_image(self.server.queue.database, item.image_sha256)
            except AnnotationError:
                self.refuse(HTTPStatus.NOT_FOUND, "image not in the database")
                return
        else:
            folder = self.server.settings.image_folder
            if leaves_folder(item.image_path) or not (folder / item.image_path).is_file():
                self.refuse(HTTPStatus.NOT_FOUND, "image not in the image folder")
                return
            data = (folder / item.image_path).read_bytes()
        self.reply(HTTPStatus.OK, data, image_type(data))


def image_type(data: bytes) -> str:
    """The image's media type from its own bytes (not its name)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return Image.MIME.get(image.format or "", "application/octet-stream")
    except (UnidentifiedImageError, OSError):
        return "application/octet-stream"
