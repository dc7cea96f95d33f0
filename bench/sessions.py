"""Server RSS against anonymous API calls, each of which Gradio treats as a new visitor session.

    python -m bench.sessions [--calls 1500] [--sessions 128] [--every 250]

Starts ``python -m app --offline`` (demo-cnn, 127.0.0.1) with ``FINERCAM_SESSIONS=--sessions``
and sends ``--calls`` ``/call/explain_classifier`` requests without a session id (what curl or any
plain HTTP client sends), each refused at once (γ = NaN) so that no model runs and the memory
left behind is the session's alone. Prints the server's RSS every ``--every`` calls. Gradio
keeps a copy of every component's config per session, for ``state_session_capacity`` sessions
(10,000 by default); compare ``--sessions 10000`` with the app's default.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import httpx

from app.allocator import resident_bytes
from bench.load import call_refused, classifier_defaults, nan_gamma_body
from bench.server import REPO_ROOT, running_server

log = logging.getLogger("bench.sessions")

EXAMPLE = REPO_ROOT / "assets" / "examples" / "red-crowned-bluebird.png"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--sessions", type=int, default=128, help="FINERCAM_SESSIONS")
    parser.add_argument("--every", type=int, default=250, help="print RSS every N calls")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="finercam-sessions-"))
    env = {"FINERCAM_SESSIONS": str(args.sessions)}
    with (
        running_server(["demo-cnn"], workdir, None, 2, env) as server,
        httpx.Client(timeout=60) as http,
    ):
        defaults = classifier_defaults(server.url)
        body = nan_gamma_body(http, server.url, defaults, EXAMPLE, "demo-cnn")
        start = time.monotonic()
        for i in range(1, args.calls + 1):
            call_refused(http, server.url, body)
            if i == 1 or i % args.every == 0 or i == args.calls:
                log.info("FINERCAM_SESSIONS=%d  call %5d  server RSS %7.1f MB  (%.0f s)",
                         args.sessions, i, resident_bytes(server.process.pid) / 2**20,
                         time.monotonic() - start)  # fmt: skip


if __name__ == "__main__":
    main()
