"""MCP over stdio: newline-delimited JSON-RPC on stdin/stdout (DESIGN §5).

    python -m mcp.stdio                          # the server in this process (same store)
    python -m mcp.stdio --url URL [--api-key K]  # a bridge to a remote Streamable HTTP endpoint

Only JSON-RPC goes to stdout; logs go to stderr."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any, BinaryIO, TextIO

from . import jsonio
from .protocol import CallContext, CallLedger, RpcError, parse_payload, rpc_error


class LineWriter:
    """Writes one JSON message a line (jsonio's encoding, so always UTF-8); safe from several threads."""

    def __init__(self, out: TextIO):
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(jsonio.dumps(message) + "\n")
            self.out.flush()


def parse_lines(lines: Iterable[bytes], write: LineWriter) -> Iterable[Any]:
    """The JSON-RPC payloads of the input lines (raw bytes: a line that is not UTF-8 is
    answered -32700 like any bad line, it does not stop the server)."""
    for line in lines:
        if not line.strip():
            continue
        try:
            yield parse_payload(line)
        except RpcError as exc:
            write(rpc_error(None, exc.code, exc.message, exc.data))


def serve_in_process(lines: Iterable[bytes], write: LineWriter) -> None:
    from app import create_app
    from mcp.http import urls_under
    from mcp.services import EXTENSION

    app = create_app()
    svc = app.extensions[EXTENSION]
    session: dict[str, Any] = {"owner": "anonymous"}
    calls = CallLedger()  # one client in this process: its requests' tasks and cancels
    threads: list[threading.Thread] = []
    try:
        for payload in parse_lines(lines, write):
            ctx = CallContext(owner="anonymous", urls=urls_under(""), session=session, notify=write, calls=calls)

            def work(payload: Any = payload, ctx: CallContext = ctx) -> None:
                reply = svc.mcp.handle_payload(payload, ctx)
                for message in reply if isinstance(reply, list) else ([reply] if reply else []):
                    write(message)

            # design: a long tool call must not block ping or notifications/cancelled behind it.
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    finally:
        svc.runtime.stop()


def bridge(lines: Iterable[bytes], write: LineWriter, url: str, api_key: str | None) -> None:
    import httpx

    from .stdio_bridge import HttpBridge

    with httpx.Client(timeout=httpx.Timeout(30.0, read=900.0)) as client:
        HttpBridge(write, url, api_key, client).run(parse_lines(lines, write))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp.stdio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="bridge to this Streamable HTTP endpoint instead of serving in process")
    parser.add_argument("--api-key", default=os.environ.get("MCP_API_KEY"),
                        help="sent as X-API-Key (default: $MCP_API_KEY)")
    args = parser.parse_args(argv)
    write = LineWriter(sys.stdout)
    lines: BinaryIO = sys.stdin.buffer
    if args.url:
        bridge(lines, write, args.url, args.api_key)
    else:
        serve_in_process(lines, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
