"""The deployed release: the git commit this code came from."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def release() -> str:
    """`RELEASE` file written by deploy.sh, else `git rev-parse HEAD`, else "unknown"."""
    marker = ROOT / "RELEASE"
    if marker.is_file():
        return marker.read_text().strip() or "unknown"
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
