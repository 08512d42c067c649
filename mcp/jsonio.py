"""JSON in and out of the service, by the rules of `orchestration.safejson`.

Decoding (`loads`) is the one path every request body and stdio line goes through: strict,
refusing what no store, log or webhook could carry (see safejson). Encoding is orjson:
tool results such as `list_orchestrator_patterns` are documents of several kilobytes that
go out twice per call, and the standard library's encoder was the largest single cost of a
cheap MCP call. A value holding what outside text can hold and orjson cannot write (a lone
surrogate, an integer beyond 64 bits) is cleaned and written, never an error, so the store,
the event log, webhooks and responses all get the same bytes."""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

from orchestration.safejson import MAX_DEPTH, JsonRejected, clean, loads

__all__ = ["MAX_DEPTH", "JsonRejected", "JsonProvider", "dumpb", "dumps", "encoded", "loads"]

OPTIONS = orjson.OPT_NON_STR_KEYS
# orjson's words for what `clean` mends: a lone surrogate in a string, an integer beyond 64 bits.
UNCLEAN = ("surrogates not allowed", "Integer exceeds 64-bit range")


def dumpb(value: Any, sort_keys: bool = False) -> bytes:
    """UTF-8 JSON; values JSON has no type for are written as their `str`."""
    option = OPTIONS | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, default=str, option=option)
    except TypeError as exc:  # orjson.JSONEncodeError
        # design: only what text from outside can hold is cleaned; a circular or absurdly
        # deep structure is a bug in the code that built it, and stays an error.
        if not any(why in str(exc) for why in UNCLEAN):
            raise
        return orjson.dumps(clean(value), default=str, option=option)


def dumps(value: Any, sort_keys: bool = False) -> str:
    return dumpb(value, sort_keys).decode()


def encoded(value: Any) -> orjson.Fragment:
    """`value` encoded now, and written as these bytes wherever it is encoded again (dumpb,
    dumps): for a document handed out unchanged to many requests."""
    return orjson.Fragment(dumpb(value))


class JsonProvider(DefaultJSONProvider):
    """Flask's `jsonify` through orjson, keys in the order the code builds them (Flask's
    default sorts them); `request.get_json` by the rules of `loads`."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj, sort_keys=bool(kwargs.get("sort_keys")))

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumpb(obj), mimetype=self.mimetype)
