"""A local server speaking Anthropic's `/v1/messages` wire format: JSON answers (text, or a
`tool_use` block when a tool is forced or an agent's script calls one), SSE streaming (`message_start`,
`content_block_start`/`_delta`/`_stop`, `message_delta` with usage, `message_stop`), and
errors with `Retry-After`; latency and fault injection as tests.fakes.llm_server."""

from __future__ import annotations

import json
from typing import Any

from .llm_server import Ask, LLMHandler, LLMServer

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_error", 529: "overloaded_error"}


def system_text(system: Any) -> str:
    if isinstance(system, list):
        return "".join(block.get("text", "") for block in system)
    return system or ""


def content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if block.get("type") == "text")
    return content or ""


class Handler(LLMHandler):
    path_suffix = "/v1/messages"

    def parse(self, body: dict[str, Any]) -> Ask:
        messages = body.get("messages", [])
        user = next((content_text(m["content"]) for m in messages if m["role"] == "user"), "")
        blocks = [b for m in messages if isinstance(m["content"], list) for b in m["content"]]
        prior = sum(1 for b in blocks if b.get("type") == "tool_use")
        results = [content_text(b.get("content")) for b in blocks if b.get("type") == "tool_result"]
        forced = (body.get("tool_choice") or {}).get("type") == "tool"
        return Ask(system_text(body.get("system")), user, body.get("model", "fake"), bool(body.get("stream")),
                   body, tools=bool(body.get("tools")) and not forced, prior_calls=prior,
                   transcript="\n".join([user] + results))

    def authorized(self, key: str) -> bool:
        return self.headers.get("x-api-key", "") == key and bool(self.headers.get("anthropic-version"))

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.send_json(status, {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                                           "message": message}}, headers)

    def reply(self, ask: Ask, text: str, usage: tuple[int, int], n: int, call: dict[str, Any] | None = None) -> None:
        forced = (ask.body.get("tool_choice") or {}).get("name")
        if call:
            content = [{"type": "tool_use", "id": f"toolu_{n}", "name": call["name"], "input": call["arguments"]}]
        elif forced:
            try:
                content = [{"type": "tool_use", "id": f"toolu_{n}", "name": forced, "input": json.loads(text)}]
            except (ValueError, RecursionError):  # an unusable plan arrives as text, as a real model's refusal would
                content = [{"type": "text", "text": text}]
        else:
            content = [{"type": "text", "text": text}]
        self.send_json(200, {
            "id": f"msg_{n}", "type": "message", "role": "assistant", "model": ask.model, "content": content,
            "stop_reason": "tool_use" if content[0]["type"] == "tool_use" else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        })

    def stream(self, ask: Ask, text: str, usage: tuple[int, int], call: dict[str, Any] | None = None) -> None:
        self.begin_stream()

        def event(name: str, data: dict[str, Any], first: bool = True) -> None:
            self.write_chunk(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n", first=first)

        event("message_start", {"message": {
            "id": "msg_s", "type": "message", "role": "assistant", "model": ask.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": usage[0], "output_tokens": 1}}})
        if call:  # a tool_use block, its input streamed as partial JSON
            event("content_block_start", {"index": 0, "content_block": {
                "type": "tool_use", "id": f"toolu_s{ask.prior_calls}", "name": call["name"], "input": {}}})
            arguments = json.dumps(call["arguments"])
            for i in range(0, len(arguments), 16):
                event("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta",
                                                                     "partial_json": arguments[i:i + 16]}},
                      first=i == 0)
        else:
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            event("ping", {})
            for i, word in enumerate(text.split(" ")):
                piece = word if i == 0 else " " + word
                event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}},
                      first=i == 0)
        event("content_block_stop", {"index": 0})
        event("message_delta", {"delta": {"stop_reason": "tool_use" if call else "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": usage[1]}})
        event("message_stop", {})


class FakeAnthropicServer(LLMServer):
    handler = Handler



if __name__ == "__main__":
    FakeAnthropicServer.main(__doc__)
