"""The report as PDF: the HTML page printed by WeasyPrint with its print stylesheet.

WeasyPrint takes the document's title from `<title>`, the subject from the `description`
meta (the query), and builds the PDF outline from the headings; `<a href>` become link
annotations (to the web for sources, inside the document for `[Sn]`)."""

from __future__ import annotations

import logging

from ..errors import Unavailable
from .document import Report
from .html import render as render_html


# design: WeasyPrint logs every layout step at INFO; a report is one request, not news.
logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)


def render(report: Report) -> bytes:
    # design: imported on first use; WeasyPrint takes over a second to import, and only
    # workers that are asked for a PDF should pay for it.
    try:
        import weasyprint
        from weasyprint.urls import URLFetcher
    except OSError as exc:  # pango or harfbuzz missing: WeasyPrint loads them when imported
        raise Unavailable("PDF reports need the pango and harfbuzz system libraries: "
                          "apt-get install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core",
                          {"format": "pdf", "cause": str(exc)[:300]}) from None

    # design: a report loads nothing from anywhere (no image, font or stylesheet by URL):
    # a URL in a hostile report must not make the server fetch it.
    no_fetch = URLFetcher(allowed_protocols=set())
    html = weasyprint.HTML(string=render_html(report), url_fetcher=no_fetch, base_url=None)
    return html.write_pdf()
