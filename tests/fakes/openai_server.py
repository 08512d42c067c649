"""A local server speaking OpenAI's `/v1/chat/completions` wire format (JSON and SSE
streaming with `include_usage`, `tool_calls` answers to requests offering `tools`, errors
with `Retry-After`), with latency and fault
injection (tests.fakes.llm_server), for provider tests. Run standalone for benchmarks:
`python -m tests.fakes.openai_server --port 8099 --latency 0.5`."""

from __future__ import annotations

import json
import time
from typing import Any

from .llm_server import Ask, Call, FakeState, LLMHandler, LLMServer, answer, role_of

__all__ = ["Call", "FakeServer", "FakeState", "answer", "role_of"]

ERROR_TYPES = {401: "invalid_request_error", 429: "rate_limit_exceeded", 404: "invalid_request_error"}


class Handler(LLMHandler):
    path_suffix = "/chat/completions"

    def parse(self, body: dict[str, Any]) -> Ask:
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        prior = sum(len(m.get("tool_calls") or []) for m in messages if m["role"] == "assistant")
        transcript = "\n".join([user] + [m.get("content") or "" for m in messages if m["role"] == "tool"])
        return Ask(system, user, body.get("model", "fake"), bool(body.get("stream")), body,
                   tools=bool(body.get("tools")), prior_calls=prior, transcript=transcript)

    def authorized(self, key: str) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {key}"

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        code = "invalid_api_key" if status == 401 else None
        self.send_json(status, {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"),
                                          "code": code}}, headers)

    def reply(self, ask: Ask, text: str, usage: tuple[int, int], n: int, call: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if call:
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{n}", "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]}
        self.send_json(200, {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": ask.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}],
            "usage": self._usage(usage),
        })

    def stream(self, ask: Ask, text: str, usage: tuple[int, int], call: dict[str, Any] | None = None) -> None:
        self.begin_stream()
        base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": ask.model}
        if call:  # a tool call streams as its name, then its arguments in pieces
            arguments = json.dumps(call["arguments"])
            head = {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": f"call_s{ask.prior_calls}", "type": "function",
                 "function": {"name": call["name"], "arguments": ""}}]}
            pieces = [head] + [{"tool_calls": [{"index": 0, "function": {"arguments": arguments[i:i + 16]}}]}
                               for i in range(0, len(arguments), 16)]
        else:
            pieces = [{"content": word if i == 0 else " " + word} for i, word in enumerate(text.split(" "))]
        for i, delta in enumerate(pieces):
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.write_chunk(f"data: {json.dumps(chunk)}\n\n", first=i == 0)
        done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if call else "stop"}]}
        self.write_chunk(f"data: {json.dumps(done)}\n\n", first=True)
        if (ask.body.get("stream_options") or {}).get("include_usage"):
            self.write_chunk(f"data: {json.dumps({**base, 'choices': [], 'usage': self._usage(usage)})}\n\n",
                             first=True)
        self.write_chunk("data: [DONE]\n\n", first=True)

    @staticmethod
    def _usage(usage: tuple[int, int]) -> dict[str, int]:
        return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}


class FakeServer(LLMServer):
    handler = Handler
    base_path = "/v1"



if __name__ == "__main__":
    FakeServer.main(__doc__)
