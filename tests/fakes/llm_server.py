"""What the fake LLM servers share: answers by role, the record of every request, fault
injection and a watch on the client's connection. Each wire format (OpenAI chat
completions, Anthropic messages) is a subclass of `LLMHandler` in its own module.

Answers are recognised by the system prompt the production client sends: a JSON plan for
the planner, a finding citing the numbered passages for worker agents, a merge keeping the
`[S<n>]` tags for synthesizers, `{"gaps": [...]}` (from `review_gaps`) for the reviewer.

A worker agent offered tools follows `worker_script`: its Nth call (counted by the tool
calls already in the conversation) calls the script's Nth tool, in the wire format's own
tool-call shape; past the script it answers in text. Offered no tools but asked for JSON
actions, it answers the same script as JSON. `reject_tools` answers 400 to any request
carrying tools, as a model without tool calling does."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DROPPED = 499  # status recorded for a request whose client went away before its answer ended


@dataclass
class Trick:
    """A misbehaving answer (the fuzz of model answers): the model says `text` instead of
    its usual answer, or the server writes `raw` as the whole 200 body (garbage, a wrong
    shape, a stream cut short) and closes the connection."""

    text: str | None = None
    raw: bytes | None = None


@dataclass
class Call:
    at: float
    role: str
    model: str
    stream: bool
    status: int
    input_tokens: int = 0
    output_tokens: int = 0
    prompt: str = ""  # a digest of the whole conversation: a retry of a call has the same one
    tool: str | None = None  # the tool this answer called, if any
    step: int = 0  # for a worker offered tools: how many tool calls the conversation already had


@dataclass
class FakeState:
    latency: float = 0.0
    api_key: str | None = None
    fail_every: int = 0  # every Nth request answers `fail_status`
    fail_status: int = 429
    retry_after: str = "1"
    fail_match: str = ""  # requests whose user prompt contains this answer `fail_match_status`
    fail_match_status: int = 500
    bad_plans: int = 0  # the first N planner requests get an unusable plan
    chunk_delay: float = 0.0  # seconds between streamed chunks
    max_concurrency: int = 0  # >0: requests beyond this many wait their turn (a saturated provider)
    worker_script: list[dict[str, Any]] = field(default_factory=list)  # [{"name": ..., "arguments": {...}}]
    review_gaps: list[str] = field(default_factory=list)
    reject_tools: bool = False
    stall_step: int = -1  # a worker's tool-choosing call after this many tool calls waits stall_seconds
    stall_seconds: float = 0.0
    stall_match: str = ""  # ... and only when its first message contains this
    trick: Callable[[Ask], Trick | None] | None = None  # per request: misbehave this way, or None
    calls: list[Call] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Semaphore | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency:
            self.gate = threading.Semaphore(self.max_concurrency)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False when `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.in_flight == 0

    def counted(self) -> list[Call]:
        """Calls that were answered 200 (what a client is billed for)."""
        with self.lock:
            return [c for c in self.calls if c.status == 200]


def role_of(system: str) -> str:
    if system.startswith("You are the planner"):
        return "planner"
    if system.startswith("You are the reviewer"):
        return "reviewer"
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
        # the first passages and, after later searches, the last ones too
        chosen = list(dict.fromkeys(refs[:3] + refs[3:][-2:]))
        sentences = [f"{title} bears on {subject} [{n}]." for n, title in chosen]
        return " ".join(sentences)
    if role == "reviewer":
        return json.dumps({"gaps": []})
    tags = list(dict.fromkeys(re.findall(r"\[S\d+\]", user)))
    body = " ".join(f"Point supported by {t}." for t in tags[:8]) or "No cited findings."
    return f"## Summary\n\nMerged findings {''.join(tags[:3])}.\n\n## Findings\n\n{body}"


def count_tokens(text: str) -> int:
    """The fake's tokenizer: four characters a token."""
    return max(1, len(text) // 4)


@dataclass
class Ask:
    """One request, read from whichever wire format carried it."""

    system: str
    user: str
    model: str
    stream: bool
    body: dict[str, Any]
    tools: bool = False  # offered tools to choose from (not a forced structured-output tool)
    prior_calls: int = 0  # tool calls already in the conversation
    transcript: str = ""  # the first user message and every tool result, as text

    @property
    def role(self) -> str:
        return role_of(self.system)


class ClientGone(Exception):
    """The client closed the connection before the answer was complete."""


class LLMHandler(BaseHTTPRequestHandler):
    """Accounting, auth, faults and latency around one completion; subclasses read their
    wire format (`parse`) and write it (`reply`, `stream`, `error`)."""

    server: LLMServer
    protocol_version = "HTTP/1.1"
    path_suffix = ""

    def log_message(self, *args: Any) -> None:
        pass

    # -- what a wire format provides ------------------------------------------------

    def parse(self, body: dict[str, Any]) -> Ask:
        raise NotImplementedError

    def authorized(self, key: str) -> bool:
        raise NotImplementedError

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        raise NotImplementedError

    def reply(self, ask: Ask, text: str, usage: tuple[int, int], n: int, call: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def stream(self, ask: Ask, text: str, usage: tuple[int, int], call: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    # -- the shared part --------------------------------------------------------------

    def send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def send_raw(self, ask: Ask, raw: bytes) -> None:
        """`raw` as the body of a 200, of the media type the client expects; then close."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if ask.stream else "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(raw)
        except OSError:
            raise ClientGone from None

    def begin_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def write_chunk(self, raw: str, first: bool = False) -> None:
        """Write one SSE chunk, after `chunk_delay` (watching for the client going away)."""
        if not first:
            self.pause(self.server.state.chunk_delay)
        try:
            self.wfile.write(raw.encode())
            self.wfile.flush()
        except OSError:
            raise ClientGone from None

    def pause(self, seconds: float) -> None:
        """Sleep, but notice at once when the client closes the connection."""
        deadline = time.monotonic() + seconds
        # design: poll, not select: a long test session may hold more than 1024 descriptors,
        # and select() cannot watch one numbered above that
        poller = select.poll()
        poller.register(self.connection, select.POLLIN)
        while (remaining := deadline - time.monotonic()) > 0:
            readable = poller.poll(min(remaining, 0.02) * 1000)
            if readable:
                try:
                    peek = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    peek = b""
                if not peek:
                    raise ClientGone
                time.sleep(remaining)
                return

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not self.path.rstrip("/").endswith(self.path_suffix):
            self.error(404, "not found")
            return
        ask = self.parse(body)
        with state.lock:
            state.requests += 1
            state.arrivals.append(time.time())
            n = state.requests
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            if state.max_concurrency and state.gate is None:
                # tests set max_concurrency on a running server, after __post_init__
                state.gate = threading.Semaphore(state.max_concurrency)
            gate = state.gate
        if gate:
            gate.acquire()
        try:
            self.pause(state.latency)
            if state.api_key is not None and not self.authorized(state.api_key):
                self._record(ask, 401)
                self.error(401, "invalid x-api-key")
                return
            if state.fail_every and n % state.fail_every == 0:
                self._record(ask, state.fail_status)
                self.error(state.fail_status, "Rate limit reached", {"Retry-After": state.retry_after})
                return
            if state.fail_match and state.fail_match in ask.user:
                self._record(ask, state.fail_match_status)
                self.error(state.fail_match_status, "Internal server error")
                return
            if state.reject_tools and ask.tools:
                self._record(ask, 400)
                self.error(400, "this model does not support tools")
                return
            call, step = None, 0
            if ask.tools and ask.role == "worker":
                step = ask.prior_calls
                if step == state.stall_step and state.stall_match in ask.user:
                    self.pause(state.stall_seconds)
                call = state.worker_script[step] if step < len(state.worker_script) else None
                text = "" if call else answer("worker", ask.system, ask.transcript)
            elif ask.role == "worker" and "JSON object only" in ask.system:
                step = ask.user.count("Action taken: ")
                scripted = state.worker_script[step] if step < len(state.worker_script) else None
                text = (json.dumps({"action": scripted["name"], **scripted["arguments"]}) if scripted else
                        json.dumps({"action": "finish", "answer": answer("worker", ask.system, ask.user)}))
            elif ask.role == "reviewer":
                text = json.dumps({"gaps": state.review_gaps})
            else:
                text = answer(ask.role, ask.system, ask.user)
            if ask.role == "planner":
                with state.lock:
                    if state.bad_plans > 0:
                        state.bad_plans -= 1
                        text = "I would rather not plan today."
            trick = state.trick(ask) if state.trick else None
            if trick is not None and trick.raw is not None:
                self.send_raw(ask, trick.raw)
                self._record(ask, 200)
                return
            if trick is not None and trick.text is not None:
                text = trick.text
            usage = (count_tokens(ask.system + ask.transcript), count_tokens(text or json.dumps(call)))
            if ask.stream:
                self.stream(ask, text, usage, call)
            else:
                self.reply(ask, text, usage, n, call)
            self._record(ask, 200, usage, call["name"] if call else None, step)
        except ClientGone:
            self.close_connection = True
            self._record(ask, DROPPED)
            with state.lock:
                state.disconnects.append(time.time())
        finally:
            if gate:
                gate.release()
            with state.lock:
                state.in_flight -= 1

    def _record(self, ask: Ask, status: int, usage: tuple[int, int] = (0, 0), tool: str | None = None,
                step: int = 0) -> None:
        state = self.server.state
        conversation = json.dumps(ask.body.get("messages"), sort_keys=True)
        digest = hashlib.sha1((ask.system + "\0" + conversation).encode()).hexdigest()[:12]
        with state.lock:
            state.calls.append(Call(time.time(), ask.role, ask.model, ask.stream, status, usage[0], usage[1],
                                    digest, tool, step))


class LLMServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of agents must not wait on SYN retries of a short backlog
    handler: type[LLMHandler] = LLMHandler
    base_path = ""

    def __init__(self, port: int = 0, **state: Any):
        super().__init__(("127.0.0.1", port), self.handler)
        self.state = FakeState(**state)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.base_path}"

    def start(self) -> LLMServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    @classmethod
    def main(cls, description: str) -> None:
        """Serve standalone (benchmarks): prints the base URL, then serves until killed."""
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--port", type=int, default=0)
        parser.add_argument("--latency", type=float, default=0.0)
        args = parser.parse_args()
        server = cls(args.port, latency=args.latency)
        print(server.base_url, flush=True)
        server.serve_forever()
