"""The research console (DESIGN §13, issue 17): static files served by the service itself
under /ui/, with a Content-Security-Policy that allows only the service's own origin.

The files hold no data, so they are public like /health: a browser must load the page before
it can ask for a key. Everything the page shows comes from the API with the key it holds."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, send_from_directory

from ..services import services
from . import public_prefix

UI_DIR = Path(__file__).with_name("ui")
bp = Blueprint("ui", __name__)

# design: no inline script or style anywhere, so script-src and style-src are 'self' only;
# the page's own fetches (API, streams, downloads) are connect-src 'self'; it may not be framed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8"}


def _serve(name: str) -> Response:
    response = send_from_directory(UI_DIR, name, max_age=0 if name == "index.html" else 300)
    suffix = Path(name).suffix
    if suffix in TYPES:
        response.headers["Content-Type"] = TYPES[suffix]
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/ui")
def ui_root():
    return redirect(f"{public_prefix(services().settings)}/ui/", 308)


@bp.get("/ui/")
def ui_index():
    return _serve("index.html")


@bp.get("/ui/<path:name>")
def ui_file(name: str):
    # send_from_directory refuses paths that leave UI_DIR (404), so ../ cannot read the repository
    return _serve(name)
