"""The stdio bridge: newline-delimited JSON-RPC on stdin/stdout relayed to a remote
Streamable HTTP endpoint (`python -m mcp.stdio --url URL`).

Each message is relayed on its own thread, so a `ping` or `notifications/cancelled` is not
stuck behind a tool call that waits minutes. After initialize every POST carries the
session id and `MCP-Protocol-Version`. When the endpoint cannot be reached the bridge
retries a little, then answers the request with a JSON-RPC error and stays up; a session
the endpoint no longer knows (404) is initialized again with the client's own parameters."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from .protocol import INTERNAL_ERROR, rpc_error

log = logging.getLogger("mcp.stdio")
UPSTREAM_UNREACHABLE = -32000
# Attempts to reach the endpoint before a request is answered with UPSTREAM_UNREACHABLE,
# and the pause before each retry.
CONNECT_ATTEMPTS = 3
# A 503 (a worker holding all its streams, a store outage) is retried after its Retry-After,
# this many times, before the caller gets the error.
BUSY_RETRIES = 5
# How long the bridge waits, once stdin closes, for the answers still on their way.
DRAIN_SECONDS = 300.0
RETRY_PAUSE = 0.5


class HttpBridge:
    def __init__(self, write: Any, url: str, api_key: str | None, client: httpx.Client):
        self.write, self.url, self.client = write, url, client
        self.headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if api_key:
            self.headers["X-API-Key"] = api_key
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.initialize_params: dict[str, Any] | None = None
        self._lock = threading.Lock()  # guards the session id and version

    def run(self, messages: Iterable[Any]) -> None:
        threads: list[threading.Thread] = []
        for payload in messages:
            if _method(payload) == "initialize":
                # design: everything after initialize needs the session it opens, so it is
                # relayed before the next line is read.
                self.relay(payload)
                continue
            thread = threading.Thread(target=self.relay, args=(payload,), name="mcp-bridge", daemon=True)
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
        # design: stdin closed after the last request (`echo '{…}' | python -m mcp.stdio --url …`):
        # its answers are still written before the session ends, within a bound
        deadline = time.monotonic() + DRAIN_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.close()

    def close(self) -> None:
        """stdin closed: the client is gone, so end its session upstream (best effort)."""
        with self._lock:
            session_id = self.session_id
        if session_id:
            try:
                self.client.delete(self.url, headers={**self.headers, "Mcp-Session-Id": session_id}, timeout=5)
            except httpx.HTTPError:
                pass

    def relay(self, payload: Any) -> None:
        request_ids = _request_ids(payload)
        try:
            replies = self.post(payload)
            if replies is None and self.initialize_params is not None and _method(payload) != "initialize":
                log.warning("the endpoint no longer knows this session; initializing again")
                self.reinitialize()
                replies = self.post(payload)
            for message in replies or []:
                self.write(message)
        except httpx.TransportError as exc:
            for msg_id in request_ids:
                self.write(rpc_error(msg_id, UPSTREAM_UNREACHABLE, f"MCP endpoint unreachable: {exc}",
                                     {"url": self.url}))
        except UpstreamError as exc:
            for msg_id in request_ids:
                self.write(rpc_error(msg_id, INTERNAL_ERROR, str(exc), exc.data))
        except ValueError as exc:  # a stream event that is not JSON
            for msg_id in request_ids:
                self.write(rpc_error(msg_id, INTERNAL_ERROR, f"MCP endpoint sent a message that is not JSON: {exc}"))

    def reinitialize(self) -> None:
        with self._lock:
            self.session_id = None
        replies = self.post({"jsonrpc": "2.0", "id": "bridge-reinitialize", "method": "initialize",
                             "params": self.initialize_params})
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if not replies or "result" not in replies[0]:
            raise UpstreamError("the endpoint refused to initialize a new session", {"reply": replies})

    def post(self, payload: Any) -> list[dict[str, Any]] | None:
        """The endpoint's JSON-RPC messages for `payload`, in order; None when it answered
        404 for our session."""
        attempt = busy = 0
        while True:
            try:
                return self._post_once(payload)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # design: only failures to connect are retried; nothing was sent, so a
                # retried tools/call cannot start a second task.
                attempt += 1
                if attempt >= CONNECT_ATTEMPTS:
                    raise
                time.sleep(RETRY_PAUSE * attempt)
            except Busy as exc:
                # a 503 (the worker's streams are all taken, the store is away) started
                # nothing: tried again after its Retry-After, a few times
                busy += 1
                if busy > BUSY_RETRIES:
                    raise UpstreamError("MCP endpoint answered HTTP 503 (busy)", {"status": 503}) from None
                time.sleep(exc.retry_after)

    def _post_once(self, payload: Any) -> list[dict[str, Any]] | None:
        headers = dict(self.headers)
        with self._lock:
            if self.session_id and _method(payload) != "initialize":
                headers["Mcp-Session-Id"] = self.session_id
            if self.protocol_version:
                headers["MCP-Protocol-Version"] = self.protocol_version
        with self.client.stream("POST", self.url, content=json.dumps(payload), headers=headers) as response:
            if response.status_code == 404 and "Mcp-Session-Id" in headers:
                response.read()
                return None
            if response.status_code == 503:
                response.read()
                raise Busy(retry_after(response.headers.get("Retry-After")))
            if response.status_code == 202:
                return []
            if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                return list(self._streamed(response))
            body = response.read()
        try:
            reply = json.loads(body)
        except ValueError:
            reply = None
        if isinstance(reply, list) or (isinstance(reply, dict) and reply.get("jsonrpc") == "2.0"):
            messages = reply if isinstance(reply, list) else [reply]
            self._learn_session(payload, response, messages)
            return messages
        raise UpstreamError(f"MCP endpoint answered HTTP {response.status_code}",
                            {"status": response.status_code, "body": body[:500].decode(errors="replace")})

    def _streamed(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        """Write notifications as they arrive; yield the response(s) at the end."""
        data: list[str] = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                message = json.loads("\n".join(data))
                data = []
                if "method" in message:
                    self.write(message)
                else:
                    yield message
        if data:
            yield json.loads("\n".join(data))

    def _learn_session(self, payload: Any, response: httpx.Response, messages: list[dict[str, Any]]) -> None:
        if _method(payload) != "initialize":
            return
        result = messages[0].get("result") if messages else None
        if not isinstance(result, dict):
            return
        with self._lock:
            self.session_id = response.headers.get("Mcp-Session-Id")
            self.protocol_version = result.get("protocolVersion")
            self.initialize_params = payload.get("params")


class Busy(Exception):
    """The endpoint answered 503: try again after `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(retry_after)
        self.retry_after = retry_after


def retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header in seconds (1 when absent or a date), at most 30."""
    try:
        return min(max(float(value or 1), 0.0), 30.0)
    except ValueError:
        return 1.0


class UpstreamError(Exception):
    def __init__(self, message: str, data: Any = None):
        super().__init__(message)
        self.data = data


def _method(payload: Any) -> str | None:
    return payload.get("method") if isinstance(payload, dict) else None


def _request_ids(payload: Any) -> list[Any]:
    items = payload if isinstance(payload, list) else [payload]
    return [m["id"] for m in items if isinstance(m, dict) and "id" in m and "method" in m]
