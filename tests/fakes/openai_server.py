"""A local server speaking OpenAI's `/v1/chat/completions` wire format (JSON and SSE
streaming, `usage`, errors), with latency and fault injection, for provider tests.

It answers by role, recognised from the system prompt the production client sends: a JSON
plan for the planner, a finding citing the numbered passages for worker agents, a merge
keeping the `[S<n>]` tags for synthesizers. Run standalone for benchmarks:
`python -m tests.fakes.openai_server --port 8099 --latency 0.5`."""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Call:
    at: float
    role: str
    model: str
    stream: bool
    status: int
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class FakeState:
    latency: float = 0.0
    api_key: str | None = None
    fail_every: int = 0  # every Nth request answers `fail_status`
    fail_status: int = 429
    retry_after: str = "1"
    max_concurrency: int = 0  # >0: requests beyond this many wait their turn (a saturated provider)
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Semaphore | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency:
            self.gate = threading.Semaphore(self.max_concurrency)

    def counted(self) -> list[Call]:
        """Calls that were answered 200 (what a client is billed for)."""
        with self.lock:
            return [c for c in self.calls if c.status == 200]


def role_of(system: str) -> str:
    if system.startswith("You are the planner"):
        return "planner"
    if system.startswith("You are a research agent"):
        return "worker"
    return "synthesis"


def answer(role: str, system: str, user: str) -> str:
    if role == "planner":
        n = int(re.search(r"exactly (\d+)", system).group(1))
        question = user.split("\n", 1)[0].removeprefix("Question: ").strip()
        return json.dumps({"subtasks": [
            {"title": f"Aspect {i} of {question[:60]}", "query": f"{question} aspect {i}",
             "description": f"Part {i} of the question."} for i in range(1, n + 1)]})
    if role == "worker":
        refs = re.findall(r"^\[(\d+)\] (.+?) \(", user, flags=re.M)
        subject = user.split("\n", 1)[0].removeprefix("Subtask: ")
        if not refs:
            return f"The passages do not cover {subject}."
        sentences = [f"{title} bears on {subject} [{n}]." for n, title in refs[:3]]
        return " ".join(sentences)
    tags = list(dict.fromkeys(re.findall(r"\[S\d+\]", user)))
    body = " ".join(f"Point supported by {t}." for t in tags[:8]) or "No cited findings."
    return f"## Summary\n\nMerged findings {''.join(tags[:3])}.\n\n## Findings\n\n{body}"


class Handler(BaseHTTPRequestHandler):
    server: FakeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        role = role_of(system)
        stream = bool(body.get("stream"))
        with state.lock:
            state.requests += 1
            n = state.requests
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        if state.gate:
            state.gate.acquire()
        try:
            time.sleep(state.latency)
            auth = self.headers.get("Authorization", "")
            if state.api_key is not None and auth != f"Bearer {state.api_key}":
                self._record(role, body, stream, 401)
                self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}})
                return
            if state.fail_every and n % state.fail_every == 0:
                self._record(role, body, stream, state.fail_status)
                self._json(state.fail_status, {"error": {"message": "Rate limit reached", "type": "rate_limit"}},
                           {"Retry-After": state.retry_after})
                return
            text = answer(role, system, user)
            usage = {"prompt_tokens": max(1, len(system + user) // 4), "completion_tokens": max(1, len(text) // 4)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            self._record(role, body, stream, 200, usage)
            if stream:
                self._stream(body, text, usage)
            else:
                self._json(200, {
                    "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": usage,
                })
        finally:
            if state.gate:
                state.gate.release()
            with state.lock:
                state.in_flight -= 1

    def _stream(self, body: dict[str, Any], text: str, usage: dict[str, int]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "fake")}
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(done)}\n\n".encode())
        self.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _record(self, role: str, body: dict[str, Any], stream: bool, status: int,
                usage: dict[str, int] | None = None) -> None:
        state = self.server.state
        with state.lock:
            state.calls.append(Call(time.time(), role, body.get("model", ""), stream, status,
                                    (usage or {}).get("prompt_tokens", 0), (usage or {}).get("completion_tokens", 0)))


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    # design: the default listen backlog of 5 drops the SYNs of a burst of 20 agents, and
    # each dropped one costs a 1 s retransmit: the fake, not the client, would set the pace.
    request_queue_size = 256

    def __init__(self, port: int = 0, **state: Any):
        super().__init__(("127.0.0.1", port), Handler)
        self.state = FakeState(**state)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> FakeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeServer(args.port, latency=args.latency)
    print(server.base_url, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
