"""REST access to the tool registry: list tools, call any tool with a JSON object."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import jsonio
from ..security import require_scopes
from ..services import services
from ..tools import ToolContext
from . import json_body, owner, task_urls
from .streams import admit_stream, sse_response

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
    if streaming:
        admit_stream(svc)  # before the task starts, so a refused stream starts nothing
    if tool.starts_task:
        svc.limits.hit_orchestrate()
    ctx = ToolContext(owner=owner(), urls=lambda task_id: task_urls(svc.settings, task_id))
    output = svc.tools.call(name, arguments, ctx)
    if streaming and output.accepted:
        # design: the same stream as GET /stream/<task_id>, after one `task` frame without an id
        # (so ids, resumption and the end stay those of the task) naming the task and its URLs.
        handle = output.data
        return sse_response(svc, handle["task_id"], 0, f"event: task\ndata: {jsonio.dumps(handle)}\n\n")
    return jsonify(output.data), 202 if output.accepted else 200
