"""python -m mcmdpo.app annotate --candidates FILE --image_folder DIR --db FILE [--host] [--port]
[--overlap K] [--auth USER:PASS | --auth_file FILE] [--seed N]

Checks every flag and the whole candidates file, adds its records to the database, then serves
the annotation page (:mod:`mcmdpo.app.annotate_server`) until Ctrl-C. Anything wrong stops it
before it listens, with exit status 2 and a message naming the flag, or the file, record and
field. See docs/annotation.md."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from pathlib import Path

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7861  # the comparison page's 7860 + 1: both may run
LOOPBACK_NAMES = ("localhost",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.app annotate",
                                     description="Collect people's preferences between two alt-texts, and their corrections.")
    parser.add_argument("--candidates", required=True,
                        help="the builder's sample stage file (OUT/sample.jsonl) or a preference file in the upstream format")
    parser.add_argument("--image_folder", required=True, help="folder the records' image paths are relative to; no other file is served")
    parser.add_argument("--db", required=True, help="the annotation database (SQLite), created if absent; the human ranker and "
                                                    "'python -m mcmdpo.app export' read it")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default 127.0.0.1: this machine only; any other needs --auth or --auth_file)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--overlap", type=int, default=1, help="how many annotators answer each record")
    parser.add_argument("--auth", default=None, metavar="USER:PASS", help="HTTP basic authentication every request needs")
    parser.add_argument("--auth_file", default=None, metavar="FILE",
                        help="a file holding USER:PASS on its first line (the password then appears in no command line)")
    parser.add_argument("--seed", type=int, default=0, help="seeds which two candidates a record shows and on which side")
    return parser


def parse_credentials(text: str, source: str) -> tuple[str, str]:
    """(user, password) of ``USER:PASS``; a ValueError naming ``source`` otherwise."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{source}: give USER:PASS, a user name and a password separated by ':' (both non-empty)")
    if any(ord(character) < 32 for character in text):
        raise ValueError(f"{source}: USER:PASS without control characters")
    return user, password


def credentials_of(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.auth is not None and args.auth_file is not None:
        raise ValueError("--auth and --auth_file: give one of them")
    if args.auth is not None:
        return parse_credentials(args.auth, "--auth")
    if args.auth_file is not None:
        path = Path(args.auth_file)
        if not path.is_file():
            raise ValueError(f"--auth_file {path}: file not found")
        lines = path.read_text(encoding="utf-8").splitlines()
        return parse_credentials(lines[0].strip() if lines else "", f"--auth_file {path}, line 1")
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


def check_flags(args: argparse.Namespace) -> tuple[str, str] | None:
    """The credentials, once every flag is checked; a ValueError naming the flag otherwise."""
    if args.overlap < 1:
        raise ValueError(f"--overlap {args.overlap}: each record needs at least 1 annotator")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: a port is 0 to 65535")
    credentials = credentials_of(args)
    if credentials is None and not is_loopback(args.host):
        raise ValueError(f"--host {args.host} serves other machines: it needs --auth USER:PASS or --auth_file FILE "
                         "(refusing to serve the annotation page without authentication)")
    if not Path(args.image_folder).is_dir():
        raise ValueError(f"--image_folder {args.image_folder}: not a folder")
    return credentials


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    from mcmdpo.app.annotate_server import AnnotationServer, ServerSettings
    from mcmdpo.app.annotation_store import AnnotationQueue
    from mcmdpo.app.candidates_file import describe, read_candidates
    from mcmdpo.build.annotations import add_items, create_database

    try:
        credentials = check_flags(args)
        candidates = read_candidates(args.candidates, args.image_folder, args.seed)
        create_database(args.db)
        added = add_items(args.db, candidates.items, candidates.images, {"image_folder": str(Path(args.image_folder).resolve())})
    except ValueError as error:  # CandidatesError and AnnotationError among them
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.candidates}: {describe(candidates)}; {added} new in {args.db}", file=sys.stderr)
    queue = AnnotationQueue(args.db, args.overlap, args.seed)
    try:
        server = AnnotationServer((args.host, args.port), queue, ServerSettings(Path(args.image_folder), credentials))
    except OSError as error:  # the port is taken, the address is not this machine's, ...
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"ready in {time.perf_counter() - start:.1f} s: http://{host}:{server.server_address[1]}/ "
          f"(overlap {args.overlap}{', basic authentication' if credentials else ''}; Ctrl-C stops it)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
