"""JSON encoding for the hot paths, with orjson.

Tool results such as `list_orchestrator_patterns` are documents of several kilobytes that
go out twice per call (as `structuredContent` and as text); the standard library's encoder
was the largest single cost of a cheap MCP call. Decoding stays with the standard library,
whose errors and number handling the request validation relies on."""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

OPTIONS = orjson.OPT_NON_STR_KEYS


def dumpb(value: Any) -> bytes:
    """UTF-8 JSON; values JSON has no type for are written as their `str`."""
    return orjson.dumps(value, default=str, option=OPTIONS)


def dumps(value: Any, sort_keys: bool = False) -> str:
    return orjson.dumps(value, default=str, option=OPTIONS | (orjson.OPT_SORT_KEYS if sort_keys else 0)).decode()


class JsonProvider(DefaultJSONProvider):
    """Flask's `jsonify` through orjson, keys in the order the code builds them (Flask's
    default sorts them); loading as Flask does by default."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj, sort_keys=bool(kwargs.get("sort_keys")))

    def response(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumpb(obj), mimetype=self.mimetype)
