"""Report documents (DESIGN §13): a finished task's report as Markdown, HTML, PDF or Word.

One module per format, registered by name and imported on first use (CONVENTIONS 5):
`mcp.reports.markdown`, `.html`, `.pdf`, `.docx`, each `render(Report)`. A finished task's
document is made once per format and kept in the store, so every worker (and host) serves
the same bytes, and the same ETag, from then on."""

from __future__ import annotations

import base64
import hashlib
import importlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from orchestration.models import TERMINAL_STATUSES

from ..errors import Conflict
from ..store import Store, TaskRecord
from ..version import release
from .document import build_report
from .snapshot import snapshot_result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Format:
    name: str
    media_type: str
    renderer: str  # module:function

    @property
    def binary(self) -> bool:
        return not self.media_type.startswith("text/")


FORMATS = {
    "md": Format("md", "text/markdown", "mcp.reports.markdown:render"),
    "html": Format("html", "text/html", "mcp.reports.html:render"),
    "pdf": Format("pdf", "application/pdf", "mcp.reports.pdf:render"),
    "docx": Format("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                   "mcp.reports.docx:render"),
}
ALIASES = {"markdown": "md", "htm": "html", "word": "docx"}


@dataclass(frozen=True)
class ReportDocument:
    format: Format
    body: bytes
    filename: str
    cached: bool  # served from the store, not made by this request

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:32]

    @property
    def content_type(self) -> str:
        return self.format.media_type + ("; charset=utf-8" if not self.format.binary else "")

    def text(self) -> str:
        return self.body.decode("utf-8")

    def mcp_contents(self, uri: str) -> dict[str, Any]:
        """As MCP resource contents: text formats as `text`, PDF and Word as a base64 `blob`."""
        if self.format.binary:
            return {"uri": uri, "mimeType": self.format.media_type, "blob": base64.b64encode(self.body).decode("ascii")}
        return {"uri": uri, "mimeType": self.format.media_type, "text": self.text()}


def report_uri(task_id: str, fmt: str) -> str:
    """The MCP resource of a task's report in one format."""
    return f"orchestrator://tasks/{task_id}/report.{fmt}"


def render(fmt: Format, report: Any) -> bytes:
    module_name, function = fmt.renderer.split(":")
    out = getattr(importlib.import_module(module_name), function)(report)
    return out.encode("utf-8") if isinstance(out, str) else out


_UNSAFE_NAME = re.compile(r"[^\w.-]+")


def filename_for(title: str, task_id: str, fmt: Format) -> str:
    """A file name from the title: letters, digits, dashes (no path, no quote, no space);
    the task id when nothing is left."""
    stem = _UNSAFE_NAME.sub("-", title).strip("-._")[:80].rstrip("-._") or task_id
    return f"{stem}.{fmt.name}"


class Reports:
    def __init__(self, store: Store):
        self.store = store

    def document(self, task: TaskRecord, fmt: Format, partial: bool = False) -> ReportDocument:
        """The report of `task` in `fmt`. A finished task's is made once and kept; a running
        task's (only with `partial`) is made from its checkpoints on each request."""
        title = task.title or task.query
        filename = filename_for(title, task.task_id, fmt)
        if task.status in TERMINAL_STATUSES:
            # design: kept per release, so a release that changes a renderer (a sanitiser
            # fix above all) is not shadowed by documents an older one made.
            key = f"{fmt.name}@{release()}"
            body = self.store.get_report(task.task_id, key)
            if body is not None:
                return ReportDocument(fmt, body, filename, cached=True)
            result = self.store.get_result(task.task_id) or {}
            started = time.monotonic()
            made = render(fmt, build_report(result, task.params))
            log.info("report of %s made as %s in %.2fs (%d bytes)", task.task_id, fmt.name,
                     time.monotonic() - started, len(made), extra={"task_id": task.task_id})
            # design: two workers asked at once both render; the first stored copy wins, so
            # every later request, from any worker, gets the same bytes and ETag.
            kept = self.store.save_report(task.task_id, key, made)
            return ReportDocument(fmt, kept, filename, cached=False)
        if not partial:
            raise Conflict(f"task {task.task_id} is still {task.status}; ask with partial=1 for what exists so far",
                           {"status": task.status, "progress": task.progress})
        result = snapshot_result(task, self.store.load_checkpoints(task.task_id))
        report = build_report(result, task.params, running=f"{task.status} ({task.progress:.0f}% done)")
        return ReportDocument(fmt, render(fmt, report), filename, cached=False)
