"""Anthropic's Messages API through the official `anthropic` SDK. The planner's structured
output is a forced tool call whose input schema is the plan schema; worker agents stream."""

from __future__ import annotations

import json
from typing import Any

import anthropic

from .chat import ChatProvider, ChatReply, DeltaCallback, ToolCall, ToolsUnsupported, ToolTurn
from .resilience import Governor, RetryPolicy

DEFAULT_MODEL = "claude-haiku-4-5"
PLAN_TOOL = "submit_plan"

# What the warm-up's calls are answered with (ChatProvider.warm_up): a message, and a stream
# carrying a text block, a tool_use block in pieces and the usage.
_USAGE = {"input_tokens": 1, "output_tokens": 1}
WARM_REPLY = json.dumps({
    "id": "msg_warm", "type": "message", "role": "assistant", "model": "warm-up", "stop_reason": "end_turn",
    "stop_sequence": None, "usage": _USAGE, "content": [
        {"type": "text", "text": "{}"}, {"type": "tool_use", "id": "toolu_warm", "name": PLAN_TOOL, "input": {}}]
}).encode()
WARM_STREAM = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in (
    {"type": "message_start", "message": {"id": "msg_warm", "type": "message", "role": "assistant", "content": [],
                                          "model": "warm-up", "stop_reason": None, "stop_sequence": None,
                                          "usage": _USAGE}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "toolu_warm", "name": "note", "input": {}}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": _USAGE},
    {"type": "message_stop"},
)).encode()


class AnthropicProvider(ChatProvider):
    sdk_errors = (anthropic.APIError,)
    connection_errors = (anthropic.APIConnectionError,)
    sdk_client = anthropic.AsyncAnthropic
    sdk_http_client = anthropic.DefaultAsyncHttpxClient
    warm_reply = WARM_REPLY
    warm_stream = WARM_STREAM

    def __init__(self, api_key: str, base_url: str = "", model: str = "", planner_model: str = "",
                 worker_model: str = "", synthesis_model: str = "", name: str = "anthropic",
                 request_timeout: float = 120.0, retry: RetryPolicy | None = None,
                 governor: Governor | None = None):
        super().__init__(model or DEFAULT_MODEL, planner_model, worker_model, synthesis_model, retry, governor,
                         api_key, base_url, request_timeout)
        self.name = name

    async def complete(self, model: str, system: str, user: str, max_tokens: int,
                       json_schema: dict | None = None, on_delta: DeltaCallback | None = None) -> ChatReply:
        messages = [{"role": "user", "content": user}]
        if on_delta is not None:
            return await self._stream(model, system, messages, max_tokens, on_delta)
        extra: dict = {}
        if json_schema is not None:
            extra["tools"] = [{"name": PLAN_TOOL, "description": "Submit the research plan.",
                               "input_schema": json_schema}]
            extra["tool_choice"] = {"type": "tool", "name": PLAN_TOOL}
        message = await self.client.messages.create(model=model, system=system, messages=messages,
                                                    max_tokens=max_tokens, **extra)
        parts = []
        for block in message.content:
            if block.type == "tool_use":
                # The plan arrives as the tool's input; the planner validates it like any text.
                parts.append(json.dumps(block.input))
            elif block.type == "text":
                parts.append(block.text)
        return ChatReply("".join(parts), message.usage.input_tokens, message.usage.output_tokens,
                         message.model or model)

    async def complete_tools(self, model: str, system: str, user: str, turns: list[ToolTurn],
                             tools: list[dict[str, Any]], max_tokens: int,
                             on_delta: DeltaCallback | None = None) -> ChatReply:
        messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
        for turn in turns:
            messages.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": turn.call_id, "name": turn.name, "input": turn.arguments}]})
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": turn.call_id, "content": turn.result}]})
        offer = {"tool_choice": {"type": "auto"},
                 "tools": [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                           for t in tools]}
        try:
            if on_delta is not None:
                return await self._stream(model, system, messages, max_tokens, on_delta, offer)
            message = await self.client.messages.create(
                model=model, system=system, messages=messages, max_tokens=max_tokens, **offer)
        except anthropic.BadRequestError as exc:
            if "tool" in str(exc).lower():
                raise ToolsUnsupported(str(exc)) from None
            raise
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [ToolCall(block.id, block.name, block.input if isinstance(block.input, dict) else {})
                 for block in message.content if block.type == "tool_use"]
        return ChatReply(text, message.usage.input_tokens, message.usage.output_tokens, message.model or model, calls)

    async def _stream(self, model: str, system: str, messages: list[dict], max_tokens: int,
                      on_delta: DeltaCallback, extra: dict[str, Any] | None = None) -> ChatReply:
        """A streamed message: text deltas go to `on_delta` as they come; `tool_use` blocks,
        when `extra` offers tools, are put together from their partial JSON."""
        stream = await self.client.messages.create(model=model, system=system, messages=messages,
                                                   max_tokens=max_tokens, stream=True, **(extra or {}))
        text, input_tokens, output_tokens, served_by = "", 0, 0, model
        blocks: dict[int, dict[str, str]] = {}
        # design: leaving this block, cancelled or not, closes the response and so its connection.
        async with stream:
            async for event in stream:
                if event.type == "message_start":
                    served_by = event.message.model or served_by
                    input_tokens = event.message.usage.input_tokens or 0
                    output_tokens = event.message.usage.output_tokens or 0
                elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                    blocks[event.index] = {"id": event.content_block.id, "name": event.content_block.name,
                                           "json": ""}
                elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    if event.index in blocks:
                        blocks[event.index]["json"] += event.delta.partial_json
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text += event.delta.text
                    await on_delta(text)
                elif event.type == "message_delta" and event.usage is not None:
                    # message_delta's usage is cumulative for the whole message.
                    output_tokens = event.usage.output_tokens or output_tokens
                    input_tokens = getattr(event.usage, "input_tokens", None) or input_tokens
        calls = [ToolCall(b["id"], b["name"], _input(b["json"])) for _, b in sorted(blocks.items())]
        return ChatReply(text, input_tokens, output_tokens, served_by, calls)


def _input(raw: str) -> dict[str, Any]:
    """A streamed tool_use block's input; broken JSON is a call with no arguments."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
