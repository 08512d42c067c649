"""MCP over stdio: newline-delimited JSON-RPC on stdin/stdout (DESIGN §5).

    python -m mcp.stdio                          # the server in this process (same store)
    python -m mcp.stdio --url URL [--api-key K]  # a bridge to a remote Streamable HTTP endpoint

Only JSON-RPC goes to stdout; logs go to stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from .protocol import PARSE_ERROR, CallContext, rpc_error


class LineWriter:
    """Writes one JSON message a line; safe from several threads."""

    def __init__(self, out: TextIO):
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json.dumps(message, ensure_ascii=False) + "\n")
            self.out.flush()


def parse_lines(lines: Iterable[str], write: LineWriter) -> Iterable[Any]:
    for line in lines:
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            write(rpc_error(None, PARSE_ERROR, "parse error: not JSON"))


def serve_in_process(lines: Iterable[str], write: LineWriter) -> None:
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


def bridge(lines: Iterable[str], write: LineWriter, url: str, api_key: str | None) -> None:
    import httpx

    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    with httpx.Client(timeout=httpx.Timeout(30.0, read=900.0)) as client:
        for payload in parse_lines(lines, write):
            forward(client, url, headers, payload, write)


# A 503 (a worker holding all its streams, a store outage) is retried after its Retry-After,
# this many times, before the caller gets the error.
BUSY_RETRIES = 5


def forward(client: Any, url: str, headers: dict[str, str], payload: Any, write: LineWriter) -> None:
    """POST one message and write every JSON-RPC message of the answer (JSON or SSE)."""
    for attempt in range(BUSY_RETRIES + 1):
        with client.stream("POST", url, content=json.dumps(payload), headers=headers) as response:
            if response.headers.get("Mcp-Session-Id"):
                headers["Mcp-Session-Id"] = response.headers["Mcp-Session-Id"]
            if response.status_code == 503 and attempt < BUSY_RETRIES:
                time.sleep(retry_after(response.headers.get("Retry-After")))
                continue
            if response.status_code == 202:
                return
            kind = response.headers.get("Content-Type", "")
            if kind.startswith("text/event-stream"):
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        write(json.loads(line[5:].strip()))
                return
            body = response.read()
            try:
                reply = json.loads(body)
            except ValueError:
                reply = None
            if isinstance(reply, dict) and "jsonrpc" in reply or isinstance(reply, list):
                for message in reply if isinstance(reply, list) else [reply]:
                    write(message)
            elif isinstance(payload, dict) and "id" in payload:
                write(rpc_error(payload["id"], -32603, f"upstream answered HTTP {response.status_code}",
                                {"body": body[:500].decode(errors="replace")}))
            return


def retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header in seconds (1 when absent or a date), at most 30."""
    try:
        return min(max(float(value or 1), 0.0), 30.0)
    except ValueError:
        return 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp.stdio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="bridge to this Streamable HTTP endpoint instead of serving in process")
    parser.add_argument("--api-key", default=os.environ.get("MCP_API_KEY"),
                        help="sent as X-API-Key (default: $MCP_API_KEY)")
    args = parser.parse_args(argv)
    write = LineWriter(sys.stdout)
    if args.url:
        bridge(sys.stdin, write, args.url, args.api_key)
    else:
        serve_in_process(sys.stdin, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
