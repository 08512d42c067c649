"""GET /tasks/<id>/report: a task's report as a document (DESIGN §13), the format chosen by
`?format=` or by `Accept`, with an ETag and a file name from the title."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from flask import Blueprint, Response, request

from ..errors import NotAcceptable
from ..reports import ALIASES, FORMATS, Format, ReportDocument
from ..schemas import ReportQuery
from ..services import services
from . import load_query, owner

bp = Blueprint("reports", __name__)

BY_MEDIA_TYPE = {f.media_type: f for f in FORMATS.values()} | {"text/x-markdown": FORMATS["md"]}
# design: the page may show only itself: no script, no fetch, no frame of someone else's.
HTML_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'self'")


def choose_format(requested: str | None) -> Format:
    """`?format=` when given, else the best of Accept; Markdown for `*/*` or no Accept."""
    offered = sorted(FORMATS)
    if requested is not None:
        name = ALIASES.get(requested.lower(), requested.lower())
        if name not in FORMATS:
            raise NotAcceptable(f"unknown report format {requested!r}; use one of {', '.join(offered)}",
                                {"format": requested, "formats": offered})
        return FORMATS[name]
    if not request.accept_mimetypes:
        return FORMATS["md"]
    best = request.accept_mimetypes.best_match(list(BY_MEDIA_TYPE))
    if best is None:
        raise NotAcceptable("none of the report formats is acceptable; ask for one with ?format=",
                            {"accept": request.headers.get("Accept", ""), "formats": offered,
                             "media_types": sorted(f.media_type for f in FORMATS.values())})
    return BY_MEDIA_TYPE[best]


def content_disposition(disposition: str, filename: str) -> str:
    """RFC 6266: an ASCII `filename` every client reads, and `filename*` in UTF-8 when the
    title has other letters."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    stem, _, ext = ascii_name.rpartition(".")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "report"
    value = f'{disposition}; filename="{stem}.{ext}"'
    if f"{stem}.{ext}" != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def document_response(doc: ReportDocument) -> Response:
    if request.if_none_match.contains(doc.etag):
        response = Response(status=304)
    else:
        response = Response(doc.body, content_type=doc.content_type)
    response.set_etag(doc.etag)
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Vary"] = "Accept"
    response.headers["X-Content-Type-Options"] = "nosniff"
    disposition = "inline" if doc.format.name in ("html", "pdf") else "attachment"
    response.headers["Content-Disposition"] = content_disposition(disposition, doc.filename)
    if doc.format.name == "html":
        response.headers["Content-Security-Policy"] = HTML_POLICY
    return response


@bp.get("/tasks/<task_id>/report")
def task_report(task_id: str):
    args = load_query(ReportQuery)
    svc = services()
    task = svc.tasks.get(task_id, owner())  # another key's task: 404 before anything else
    fmt = choose_format(args["format"])
    return document_response(svc.tasks.reports.document(task, fmt, args["partial"]))
