"""Report documents from a live multi-worker service on each store backend: whichever
workers render a PDF at the same moment, every request, on any worker, gets the same
bytes and ETag, made once and kept in the store."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_concurrent_pdf_requests_on_every_worker_get_one_document(service_factory, request, backend):
    env = {"RATE_LIMIT_ENABLED": "0"}
    if backend == "redis":
        url = f"{request.getfixturevalue('redis_server')}/13"
        subprocess.run(["redis-cli", "-u", url, "flushdb"], check=True, capture_output=True)
        env["STORE_URL"] = url
    service = service_factory(env)
    result = service.post("/tools/orchestrate_search", json={"query": "report documents of tasks", "wait": True},
                          timeout=60).json()
    path = f"/tasks/{result['task_id']}/report?format=pdf"
    with ThreadPoolExecutor(8) as pool:  # fresh connections, several workers rendering at once
        answers = list(pool.map(lambda _: service.get(path, timeout=120), range(8)))
    assert {a.status_code for a in answers} == {200}, [a.text[:300] for a in answers if a.status_code != 200]
    assert len({a.content for a in answers}) == 1 and len({a.headers["ETag"] for a in answers}) == 1
    assert answers[0].content.startswith(b"%PDF-")
    etag = answers[0].headers["ETag"]
    later = [service.get(path, headers={"If-None-Match": etag}) for _ in range(4)]
    assert {r.status_code for r in later} == {304}
