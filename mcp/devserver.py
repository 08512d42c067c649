"""`python3 app.py`: the development server, for a first test as the seed review runs it.

One process (Flask's threaded server) on BIND_ADDRESS:PORT with the worker runtime started,
configured from the environment like the service. It is not the production server:
start.sh runs gunicorn (several workers, graceful restarts, systemd readiness)."""

from __future__ import annotations

import argparse
import sys

from .settings import Settings

NOTICE = ("mcp-orchestrator development server: one process, not for production. "
          "Run ./start.sh (gunicorn) to serve for real.")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="app.py", description=f"{NOTICE} Serves on BIND_ADDRESS:PORT (default 127.0.0.1:5060), configured "
                                   "from the environment as the service is (see .env.example).",
        epilog="Exit codes: 0 stopped with Ctrl-C, 1 refused configuration.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env()
    if not settings.is_loopback_bind and not (settings.api_keys or settings.api_keys_file):
        print(f"app.py: refusing to bind {settings.bind_address}: no API_KEYS or API_KEYS_FILE configured",
              file=sys.stderr)
        return 1
    from app import create_app

    app = create_app(settings)
    print(f"{NOTICE}\nListening on http://{settings.bind_address}:{settings.port}/ (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    try:
        app.run(host=settings.bind_address, port=settings.port, threaded=True, use_reloader=False)
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()
    return 0
