"""The `store` fixture: the store contract runs against every backend (CONVENTIONS 5)."""

from __future__ import annotations

import pytest

from mcp.store import open_store


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/store.db")
    else:
        s = open_store(f"{request.getfixturevalue('redis_server')}/0")
        s.r.flushdb()
    yield s
    s.close()
