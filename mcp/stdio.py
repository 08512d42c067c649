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
from .protocol import INTERNAL_ERROR, CallContext, RpcError, parse_payload, rpc_error


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
    threads: list[threading.Thread] = []
    try:
        for payload in parse_lines(lines, write):
            ctx = CallContext(owner="anonymous", urls=urls_under(""), session=session, notify=write)

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

    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    with httpx.Client(timeout=httpx.Timeout(30.0, read=900.0)) as client:
        for payload in parse_lines(lines, write):
            with client.stream("POST", url, content=jsonio.dumpb(payload), headers=headers) as response:
                if response.headers.get("Mcp-Session-Id"):
                    headers["Mcp-Session-Id"] = response.headers["Mcp-Session-Id"]
                if response.status_code == 202:
                    continue
                kind = response.headers.get("Content-Type", "")
                if kind.startswith("text/event-stream"):
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            try:
                                write(jsonio.loads(line[5:].strip()))
                            except jsonio.JsonRejected:
                                pass  # not a message: nothing a client could parse either
                    continue
                body = response.read()
                try:
                    reply = jsonio.loads(body)
                except jsonio.JsonRejected:
                    reply = None
                if isinstance(reply, dict) and "jsonrpc" in reply or isinstance(reply, list):
                    for message in reply if isinstance(reply, list) else [reply]:
                        write(message)
                elif isinstance(payload, dict) and "id" in payload:
                    write(rpc_error(payload["id"], INTERNAL_ERROR, f"upstream answered HTTP {response.status_code}",
                                    {"body": body[:500].decode(errors="replace")}))


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
