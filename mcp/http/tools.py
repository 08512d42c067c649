"""REST access to the tool registry: list tools, call any tool with a JSON object."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

from flask import Blueprint, jsonify, request

from .. import jsonio
from ..security import require_scopes
from ..services import services
from ..tools import ToolContext
from . import json_body, owner, task_urls
from .streams import HandOff, event_stream, sse_response

bp = Blueprint("tools", __name__)


@bp.get("/tools")
def list_tools():
    return jsonify({"tools": [t.describe() for t in services().tools.list()]})


@bp.post("/tools/<name>")
def call_tool(name: str):
    svc = services()
    tool = svc.tools.get(name)  # unknown tool: 404 before the body is looked at
    require_scopes(svc.settings, tool.scope)
    arguments = json_body()
    streaming = tool.starts_task and arguments.get("stream") is True
    ctx = ToolContext(owner=owner(), urls=lambda task_id: task_urls(svc.settings, task_id))
    if streaming:
        hand_off = HandOff(svc, request.environ)

        def start() -> Iterator[str]:
            # design: called by sse_response only once the stream has its slot, so a refused
            # stream (503) starts nothing; bad arguments still answer 400 before any byte.
            svc.limits.hit_orchestrate()
            handle = svc.tools.call(name, arguments, ctx).data
            # the same stream as GET /stream/<task_id>, after one `task` frame without an id
            # (so ids, resumption and the end stay those of the task) naming the task and its URLs
            return chain([f"event: task\ndata: {jsonio.dumps(handle)}\n\n"],
                         event_stream(svc, handle["task_id"], 0, hand_off))

        return sse_response(svc, start, hand_off=hand_off)
    if tool.starts_task:
        svc.limits.hit_orchestrate()
    output = svc.tools.call(name, arguments, ctx)
    return jsonify(output.data), 202 if output.accepted else 200
