"""The one set of rules for JSON from outside (client requests, stdio lines, search APIs,
model answers) and for JSON that leaves the process (store, logs, webhooks, responses).

In, `loads` is strict: UTF-8 JSON text as RFC 8259 writes it, refused with a reason
(`JsonRejected.reason`) when it is not UTF-8 (`not_utf8`), holds a lone UTF-16 surrogate
(`lone_surrogate`: a valid JSON escape that is no Unicode text, which no store, log line or
webhook body can carry), a number beyond a double (`number_out_of_range`), NaN/Infinity or
anything else that is not JSON (`malformed`), or nests deeper than `MAX_DEPTH`
(`too_deep`). Of duplicate keys the last one wins, as in every mainstream parser.
Integers beyond 64 bits arrive as floats, so every decoded value can be written again.

Out, `clean` makes a value that did not come through `loads` (a model's text, an SDK's
parse) encodable: lone surrogates become U+FFFD, integers beyond 64 bits become strings,
containers nested deeper than `MAX_DEPTH` are cut."""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 64
CUT = "[nested too deep]"


class JsonRejected(ValueError):
    """Text refused by `loads`; `reason` is one of the codes above, `str()` says it in words."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """The value of the JSON text `data`, by the rules above; JsonRejected otherwise."""
    raw = data if isinstance(data, bytes) else _utf8(data)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _rejection(raw, str(exc), max_depth) from None
    # design: counting brackets is a C-speed scan; only a body with more opening brackets
    # than the limit (in strings too) is walked to measure its real depth.
    if raw.count(b"[") + raw.count(b"{") > max_depth and _deeper_than(value, max_depth):
        raise JsonRejected("too_deep", f"nesting deeper than {max_depth} levels")
    return value


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRejected("not_utf8", "the text is not valid UTF-8") from None


def _rejection(raw: bytes, message: str, max_depth: int) -> JsonRejected:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JsonRejected("not_utf8", f"the text is not valid UTF-8 (byte {exc.start})")
    if "surrogate in string" in message:
        return JsonRejected("lone_surrogate", f"a string holds a lone UTF-16 surrogate: {message}")
    if "depth limit exceeded" in message:
        return JsonRejected("too_deep", f"nesting deeper than {max_depth} levels")
    if "is infinity when parsed as double" in message:
        return JsonRejected("number_out_of_range", f"a number is too large: {message}")
    return JsonRejected("malformed", f"not JSON: {message}")


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def clean(value: Any, depth: int = 0) -> Any:
    """`value` with every string, key and number encodable (see the module's doc)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2 ** 63) <= value < 2 ** 64 else str(value)
    if isinstance(value, (dict, list, tuple)) and depth >= MAX_DEPTH:
        return CUT
    if isinstance(value, dict):
        return {clean(k, depth + 1) if isinstance(k, str) else k: clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, depth + 1) for v in value]
    return value


def clean_text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (a proper pair becomes its character)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
