"""OpenAI and every OpenAI-compatible service (xAI, Groq, Mistral, OpenRouter, Ollama),
through the official `openai` SDK."""

from __future__ import annotations

import json
from typing import Any

import openai
import orjson

from .chat import ChatProvider, ChatReply, DeltaCallback, ToolCall, ToolsUnsupported, ToolTurn
from .resilience import Governor, RetryPolicy

DEFAULT_MODEL = "gpt-4o-mini"
# How a service is asked for the planner's JSON: "json_schema" (structured outputs),
# "json_object" (JSON mode; the prompt carries the shape) or "" (the prompt alone).
JSON_MODES = ("json_schema", "json_object", "")

# What the warm-up's calls are answered with (ChatProvider.warm_up): a completion, and a
# stream carrying text, a tool call in pieces and the usage.
_CHUNK = '"id":"warm","object":"chat.completion.chunk","created":0,"model":"warm-up"'
WARM_REPLY = orjson.dumps({
    "id": "warm", "object": "chat.completion", "created": 0, "model": "warm-up",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "{}"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
WARM_STREAM = "".join(f"data: {{{_CHUNK},{line}}}\n\n" for line in (
    '"choices":[{"index":0,"delta":{"role":"assistant","content":"ok"},"finish_reason":null}]',
    '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_warm","type":"function",'
    '"function":{"name":"note","arguments":"{}"}}]},"finish_reason":"tool_calls"}]',
    '"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}',
)).encode() + b"data: [DONE]\n\n"


class OpenAIProvider(ChatProvider):
    sdk_errors = (openai.APIError,)
    connection_errors = (openai.APIConnectionError,)
    sdk_client = openai.AsyncOpenAI
    sdk_http_client = openai.DefaultAsyncHttpxClient
    warm_reply = WARM_REPLY
    warm_stream = WARM_STREAM

    def __init__(self, api_key: str, base_url: str = "", model: str = "", planner_model: str = "",
                 worker_model: str = "", synthesis_model: str = "", name: str = "openai",
                 json_mode: str = "json_schema", account_prefix: str = "", request_timeout: float = 120.0,
                 retry: RetryPolicy | None = None, governor: Governor | None = None):
        super().__init__(model or DEFAULT_MODEL, planner_model, worker_model, synthesis_model, retry, governor,
                         api_key, base_url, request_timeout)
        self.name = name
        self.json_mode = json_mode if json_mode in JSON_MODES else ""
        self.account_prefix = account_prefix

    async def complete(self, model: str, system: str, user: str, max_tokens: int,
                       json_schema: dict | None = None, on_delta: DeltaCallback | None = None) -> ChatReply:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        extra: dict[str, Any] = {}
        if json_schema is not None and self.json_mode == "json_schema":
            extra["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "plan", "schema": json_schema, "strict": True}}
        elif json_schema is not None and self.json_mode == "json_object":
            extra["response_format"] = {"type": "json_object"}
        if on_delta is not None:
            return await self._stream(model, messages, max_tokens, on_delta)
        response = await self.client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, **extra)
        usage = response.usage
        return ChatReply(response.choices[0].message.content or "",
                         usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                         response.model or model)

    async def complete_tools(self, model: str, system: str, user: str, turns: list[ToolTurn],
                             tools: list[dict[str, Any]], max_tokens: int,
                             on_delta: DeltaCallback | None = None) -> ChatReply:
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        for turn in turns:
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": turn.call_id, "type": "function",
                 "function": {"name": turn.name, "arguments": json.dumps(turn.arguments)}}]})
            messages.append({"role": "tool", "tool_call_id": turn.call_id, "content": turn.result})
        offer = {"tools": [{"type": "function", "function": tool} for tool in tools], "tool_choice": "auto"}
        try:
            if on_delta is not None:
                return await self._stream(model, messages, max_tokens, on_delta, offer)
            response = await self.client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, **offer)
        except openai.BadRequestError as exc:
            if "tool" in str(exc).lower():
                raise ToolsUnsupported(str(exc)) from None
            raise
        message = response.choices[0].message
        calls = [ToolCall(call.id, call.function.name, _arguments(call.function.arguments))
                 for call in message.tool_calls or [] if getattr(call, "function", None)]
        usage = response.usage
        return ChatReply(message.content or "", usage.prompt_tokens if usage else 0,
                         usage.completion_tokens if usage else 0, response.model or model, calls)

    async def _stream(self, model: str, messages: list[dict], max_tokens: int, on_delta: DeltaCallback,
                      extra: dict[str, Any] | None = None) -> ChatReply:
        """A streamed completion: text deltas go to `on_delta` as they come; tool calls, when
        `extra` offers tools, are put together from their pieces.

        design: the SDK builds pydantic objects for every streamed chunk (one per word or
        so); twenty agents streaming at once on one worker loop spent more time there than
        anywhere else (py-spy, bench/RESULTS.md). The SDK still sends the request and maps
        HTTP errors; the server-sent lines are read here, with orjson."""
        request = self.client.chat.completions.with_streaming_response.create(
            model=model, messages=messages, max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True}, **(extra or {}))
        text, input_tokens, output_tokens, served_by = "", 0, 0, model
        pieces: dict[int, dict[str, str]] = {}
        # design: leaving this block, cancelled or not, closes the response and so its connection.
        async with request as response:
            async for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    # orjson refuses a lone surrogate escape that a model did write; the standard
                    # library reads it, and the text is cleaned on arrival (ChatProvider._request)
                    chunk = json.loads(data)
                if chunk.get("error"):
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise openai.APIError(message or "the stream reported an error", response.http_request, body=error)
                served_by = chunk.get("model") or served_by
                usage = chunk.get("usage")
                if usage:
                    input_tokens, output_tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    piece = delta.get("content")
                    if piece:
                        text += piece
                        await on_delta(text)
                    for part in delta.get("tool_calls") or ():
                        call = pieces.setdefault(part.get("index", 0), {"id": "", "name": "", "arguments": ""})
                        call["id"] = part.get("id") or call["id"]
                        function = part.get("function") or {}
                        call["name"] += function.get("name") or ""
                        call["arguments"] += function.get("arguments") or ""
        calls = [ToolCall(c["id"], c["name"], _arguments(c["arguments"])) for _, c in sorted(pieces.items())]
        return ChatReply(text, input_tokens, output_tokens, served_by, calls)


def _arguments(raw: str | None) -> dict[str, Any]:
    """A tool call's arguments; a model that wrote broken JSON called the tool with none."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
