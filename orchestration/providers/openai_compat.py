"""OpenAI and every OpenAI-compatible service, through the official `openai` SDK."""

from __future__ import annotations

import openai

from .chat import ChatProvider, ChatReply, DeltaCallback, provider_error

DEFAULT_MODEL = "gpt-4o-mini"


class OpenAIProvider(ChatProvider):
    def __init__(self, api_key: str, base_url: str = "", model: str = "", planner_model: str = "",
                 worker_model: str = "", synthesis_model: str = "", name: str = "openai",
                 max_retries: int = 4, request_timeout: float = 120.0):
        super().__init__(model or DEFAULT_MODEL, planner_model, worker_model, synthesis_model)
        self.name = name
        # design: the SDK's own retry honours Retry-After and backs off with jitter on 429/5xx.
        self.client = openai.AsyncOpenAI(api_key=api_key or "unused", base_url=base_url or None,
                                         max_retries=max_retries, timeout=request_timeout)

    async def complete(self, model: str, system: str, user: str, max_tokens: int,
                       json_schema: dict | None = None, on_delta: DeltaCallback | None = None) -> ChatReply:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        extra = {}
        if json_schema is not None:
            extra["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "plan", "schema": json_schema, "strict": True}}
        try:
            if on_delta is None:
                response = await self.client.chat.completions.create(
                    model=model, messages=messages, max_tokens=max_tokens, **extra)
                usage = response.usage
                return ChatReply(response.choices[0].message.content or "",
                                 usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                                 response.model or model)
            return await self._stream(model, messages, max_tokens, on_delta)
        except openai.APIStatusError as exc:
            raise provider_error(self.name, exc) from None
        except openai.APIConnectionError as exc:
            raise provider_error(self.name, exc) from None

    async def _stream(self, model: str, messages: list[dict], max_tokens: int, on_delta: DeltaCallback) -> ChatReply:
        stream = await self.client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True})
        text, input_tokens, output_tokens, served_by = "", 0, 0, model
        async with stream:
            async for chunk in stream:
                served_by = chunk.model or served_by
                if chunk.usage:
                    input_tokens, output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        text += choice.delta.content
                        await on_delta(text)
        return ChatReply(text, input_tokens, output_tokens, served_by)

    async def aclose(self) -> None:
        await self.client.close()
