"""Hypothesis strategies for what a hostile or broken client sends: JSON values with lone
surrogates, huge and negative numbers and NaN/Infinity spellings; bodies built from them and
then nested far too deep, truncated, given duplicate keys, stray bytes, a byte order mark
or a very long string; schema-shaped arguments with one wrong type; odd content types."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "x\ud83d", "\ude00y"]
HUGE_NUMBERS = [2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 30, -(10 ** 30), 10 ** 400, -1, 0, -0.0, 1e308, 5e-324,
                float("nan"), float("inf"), float("-inf")]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
                 "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                 "application/merge-patch+json", "", "application/xml", "*/*"]
# Hosts that need no DNS lookup: a generated URL must never send a packet off loopback.
SAFE_URLS = ["http://127.0.0.1:9/hook", "https://10.0.0.1/x", "http://169.254.169.254/latest", "http://[::1]:1/",
             "ftp://127.0.0.1/", "http://0x7f000001/", "javascript:alert(1)", "http://:80/", "http://127.0.0.1:99999/"]

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(LONE_SURROGATES).map(lambda s: f"lone {s} surrogate"),
    st.sampled_from(["", " ", "\x00", "../../etc/passwd", "<script>", "research_0000", "%ED%A0%80", "\u202e",
                     "a" * 3, "web", "local", "*", "workflow_complete"]),
)
numbers = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(HUGE_NUMBERS))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)),
    max_leaves=12,
)


def encode(value: Any) -> bytes:
    """JSON text of `value` as a careless client writes it: NaN/Infinity spelled out, lone
    surrogates as \\u escapes, integers of any size."""
    return json.dumps(value, allow_nan=True, ensure_ascii=True).encode()


@st.composite
def mangled(draw: Any, body: bytes) -> bytes:
    """`body` as it may arrive: unchanged, or broken one of the ways clients break JSON."""
    how = draw(st.sampled_from(["as is", "as is", "deep", "truncated", "duplicate keys", "bad bytes", "bom",
                                "long string", "trailing", "empty", "non-object"]))
    if how == "deep":
        depth = draw(st.sampled_from([63, 64, 65, 200, 1025, 100_000]))
        return b"[" * depth + body + b"]" * depth if draw(st.booleans()) else \
            b'{"a":' * depth + body + b"}" * depth
    if how == "truncated":
        return body[:draw(st.integers(0, max(0, len(body) - 1)))]
    if how == "duplicate keys":
        return b'{"query": 1, "query": "valid query", ' + body[1:] if body.startswith(b"{") and len(body) > 2 \
            else b'{"a": 1, "a": ' + body + b"}"
    if how == "bad bytes":
        cut = draw(st.integers(0, len(body)))
        return body[:cut] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\x00", b"\xf4\x90\x80\x80"])) \
            + body[cut:]
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "long string":
        size = draw(st.sampled_from([70_000, 600_000, 1_100_000]))
        return b'{"query": "' + b"q" * size + b'"}'
    if how == "trailing":
        return body + draw(st.sampled_from([b",", b" x", b"}", b"\n{}", b"\x00"]))
    if how == "empty":
        return draw(st.sampled_from([b"", b" ", b"\n", b"null"]))
    if how == "non-object":
        return draw(st.sampled_from([b"[]", b"[1,2]", b'"query"', b"42", b"true", b"null", b"-0", b"1e999"]))
    return body


def hostile_bodies(objects: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[bytes]:
    """Request bodies: arbitrary JSON, or `objects` (schema-shaped), then mangled."""
    values = json_values if objects is None else st.one_of(objects, json_values)
    return values.map(encode).flatmap(mangled)


@st.composite
def wrong_type_somewhere(draw: Any, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A schema-valid object with one position (a key, or an item of a list) given a value of
    another type, or a key it does not know."""
    value = dict(draw(valid))
    if value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        if isinstance(value[key], list) and value[key]:
            items = list(value[key])
            items[draw(st.integers(0, len(items) - 1))] = draw(json_values)
            value[key] = items
        else:
            value[key] = draw(json_values)
    else:
        value[draw(texts)] = draw(json_values)
    return value


def tame(args: Any) -> Any:
    """Arguments with what would make a call wait for minutes or reach the network switched
    off: the fuzz is about input handling, not about running long tasks."""
    if not isinstance(args, dict):
        return args
    out = dict(args)
    for key in ("wait", "stream"):
        if key in out and out[key] is True:
            out[key] = False
    if "wait_seconds" in out and isinstance(out["wait_seconds"], (int, float)) and out["wait_seconds"] > 0:
        out["wait_seconds"] = 0
    for key in ("url", "webhook_url"):
        if isinstance(out.get(key), str):
            out[key] = SAFE_URLS[len(out[key]) % len(SAFE_URLS)]
    return out


def schema_objects(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects valid against a flat object schema (a tool's inputSchema): its required keys
    and some optional ones, each value drawn by hypothesis-jsonschema from its property.

    design: hypothesis-jsonschema's own object strategy calls a Hypothesis internal that
    Hypothesis 6.170 no longer has (AttributeError: 'many' object has no attribute 'more'),
    so the object is assembled here and only the properties go through `from_schema`."""
    from hypothesis_jsonschema import from_schema

    properties = schema.get("properties", {})
    required = sorted(set(schema.get("required", [])) & set(properties))
    optional = sorted(set(properties) - set(required))
    values = {name: from_schema(sub) for name, sub in properties.items()}

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        keys = required + (draw(st.lists(st.sampled_from(optional), unique=True, max_size=6)) if optional else [])
        return {key: draw(values[key]) for key in keys}

    return build()
