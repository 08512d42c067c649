"""Rate limits are counted in the store, so every worker shares one count."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app import create_app
from mcp.ratelimit import RESERVE_BATCH


@pytest.fixture
def limited(settings):
    """Two apps on one store: two workers, as far as the limits can tell."""
    config = dataclasses.replace(settings, rate_limit_orchestrate="3 per minute", rate_limit_default="8 per minute",
                                 max_concurrent_tasks=0)
    apps = [create_app(config), create_app(config)]
    yield [a.test_client() for a in apps]
    for a in apps:
        a.extensions["mcp_orchestrator"].runtime.stop()


def test_orchestrate_limit_is_shared_across_workers(limited):
    a, b = limited
    codes = [c.post("/tools/orchestrate_search", json={"query": f"query {i}"}).status_code
             for i, c in enumerate((a, b, a, b))]
    assert codes == [202, 202, 202, 429]
    refused = b.post("/tools/dream_orchestrate_search", json={"query": "alias counts too"})
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert a.post("/tools/list_orchestrator_patterns", json={}).status_code == 200


def test_default_limit_applies_everywhere_but_health(limited):
    a, b = limited
    codes = [c.get("/tasks").status_code for c in (a, b) * 5]
    assert codes.count(200) == 8 and codes[-1] == 429
    assert all(a.get("/health").status_code == 200 for _ in range(10))


def test_default_limit_is_one_count_per_key_over_every_route(limited):
    a, b = limited
    paths = ["/tasks", "/tools", "/stats", "/webhooks"] * 3
    replies = [c.get(path) for c, path in zip((a, b) * 6, paths)]
    assert [r.status_code for r in replies].count(200) == 8
    assert {r.status_code for r in replies[8:]} == {429}
    # flask-limiter's headers: this request's place in the window
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in replies[:8]] == list(range(7, -1, -1))
    assert all(r.headers["X-RateLimit-Limit"] == "8" and int(r.headers["X-RateLimit-Reset"]) > 0 for r in replies)


def test_the_same_orchestrate_limit_applies_over_mcp(limited):
    a, b = limited
    headers = {"Content-Type": "application/json", "Accept": "application/json"}

    def call(client, n):
        body = {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                "params": {"name": "orchestrate_search", "arguments": {"query": f"mcp query {n}"}, "task": {}}}
        return client.post("/mcp", json=body, headers=headers)

    assert a.post("/tools/orchestrate_search", json={"query": "rest counts too"}).status_code == 202
    codes = [call(c, n).status_code for n, c in enumerate((b, a, b))]
    assert codes == [200, 200, 429]
    assert call(a, 9).headers["Retry-After"]


def test_only_refusals_carry_retry_after(limited):
    a, _ = limited
    ordinary = [a.get("/tasks"), a.post("/tools/list_orchestrator_patterns", json={}), a.get("/tasks/search_0")]
    assert [r.status_code for r in ordinary] == [200, 200, 404]
    for response in ordinary:
        assert "Retry-After" not in response.headers, response.status_code
        assert response.headers["X-RateLimit-Remaining"]
        assert not any(name.lower().startswith("x-limiter") for name in response.headers.keys())
    while (refused := a.get("/tasks")).status_code != 429:
        pass
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


# -- exactness under concurrency, real gunicorn ---------------------------------------------

LIMIT = 120
EXTRA = 40


def burst(service, n: int, threads: int = 32) -> list:
    """`n` requests at once, each on its own connection, so the workers share them."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: service.get("/tools"), range(n)))


@pytest.fixture(params=["sqlite", "redis"])
def store_env(request) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    url = f"{request.getfixturevalue('redis_server')}/11"
    subprocess.run(["redis-cli", "-u", url, "flushdb"], check=True, capture_output=True)
    return {"STORE_URL": url}


@pytest.mark.slow
def test_the_limit_holds_exactly_across_four_workers(service_factory, store_env):
    """N + k requests in parallel over 4 workers: exactly N pass, each with its own place in
    the count (the headers count down N-1 ... 0 without a gap or a repeat), the rest 429."""
    service = service_factory({**store_env, "RATE_LIMIT_DEFAULT": f"{LIMIT} per hour"})
    replies = burst(service, LIMIT + EXTRA)
    passed = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert len(passed) == LIMIT and len(refused) == EXTRA
    assert sorted(int(r.headers["X-RateLimit-Remaining"]) for r in passed) == list(range(LIMIT))
    assert {r.headers["X-RateLimit-Limit"] for r in passed} == {str(LIMIT)}
    assert all(int(r.headers["Retry-After"]) >= 1 and r.json()["error"] == "rate_limited" for r in refused)
    assert service.get("/tools").status_code == 429


@pytest.mark.slow
def test_a_large_limit_across_four_workers_is_never_exceeded_and_short_by_at_most_the_stated_bound(
        service_factory):
    """A limit large enough that workers take spare units (SQLite, one host): N + k requests
    in parallel over 4 workers admit at most N, each with its own place in the count, and
    at least N - (4 - 1) x (SPARE_BATCH - 1); the others are refused."""
    from mcp.ratelimit import SPARE_BATCH, SPARE_SHARE

    limit = SPARE_SHARE * 4
    service = service_factory({"RATE_LIMIT_DEFAULT": f"{limit} per hour"})
    replies = burst(service, limit + EXTRA)
    passed = [r for r in replies if r.status_code == 200]
    remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in passed]
    assert limit - 3 * (SPARE_BATCH - 1) <= len(passed) <= limit
    assert len(set(remaining)) == len(passed) and min(remaining) >= 0
    assert len(replies) - len(passed) == sum(r.status_code == 429 for r in replies)


@pytest.mark.slow
def test_hosts_sharing_redis_never_exceed_the_limit(service_factory, redis_server):
    """Two hosts (two services, each its own DATA_DIR) on one Redis: never more than N
    between them, at most RESERVE_BATCH fewer while the other host holds units unspent, and
    exactly N once each host has spent what it holds."""
    url = f"{redis_server}/11"
    subprocess.run(["redis-cli", "-u", url, "flushdb"], check=True, capture_output=True)
    env = {"STORE_URL": url, "RATE_LIMIT_DEFAULT": f"{LIMIT} per hour", "WORKERS": "2"}
    hosts = [service_factory(env), service_factory(env)]
    with ThreadPoolExecutor(2) as pool:
        replies = [r for rs in pool.map(lambda s: burst(s, LIMIT, threads=16), hosts) for r in rs]
    passed = sum(r.status_code == 200 for r in replies)
    assert LIMIT - RESERVE_BATCH <= passed <= LIMIT
    assert sum(r.status_code == 429 for r in replies) == 2 * LIMIT - passed
    drained = [s.get("/tools").status_code for s in hosts for _ in range(RESERVE_BATCH + 1)]
    assert passed + drained.count(200) == LIMIT
    assert drained[-1] == drained[RESERVE_BATCH] == 429


def test_a_worker_spends_spare_units_of_a_large_limit_without_the_host_lock_and_never_exceeds_it(tmp_path):
    """Issue 19: on one host a worker takes up to SPARE_BATCH units of a large limit from the
    host's count at once and spends the spare ones under a thread lock alone. Two storages on
    one host table stand for two workers: each unit is one place in the count (no repeat),
    none beyond the limit, and at most (workers - 1) x (SPARE_BATCH - 1) short of it. A
    small limit is counted one unit at a time, exactly, as before."""
    from limits import parse

    from mcp.ratelimit import SPARE_BATCH, SPARE_SHARE, StoreStorage

    url = f"orchestrator-store+sqlite:///{tmp_path / 'orchestrator.db'}"
    workers = [StoreStorage(url), StoreStorage(url)]
    limit = SPARE_SHARE * SPARE_BATCH * 2
    large = parse(f"{limit} per hour").key_for("ip:127.0.0.1", "default")
    assert workers[0].count(large, 3600).value == 1
    assert workers[1].count(large, 3600).value == SPARE_BATCH + 1  # the first worker holds 2..16
    assert workers[0].count(large, 3600).value == 2  # spent from what it holds

    places, turn = [1, SPARE_BATCH + 1, 2], 0
    while True:
        value = workers[turn % 2].count(large, 3600).value
        turn += 1
        if value > limit:
            break
        places.append(value)
    assert len(places) == len(set(places)) and max(places) <= limit
    assert len(places) >= limit - (SPARE_BATCH - 1)

    small = parse("120 per hour").key_for("ip:127.0.0.1", "default")
    assert [workers[n % 2].count(small, 3600).value for n in range(4)] == [1, 2, 3, 4]


def test_threads_of_one_worker_running_out_of_spare_units_at_once_lose_none(tmp_path):
    """Threads of one worker that find its spare units spent at the same moment all go to
    the host table: the first takes a batch and the others spend it. Each taking a batch of
    its own, the last one kept overwrote the others' unspent units: a burst over four
    workers admitted 426 of a limit of 512. On one worker nothing may be lost: the places
    admitted are exactly 1..N, for each of several keys."""
    from limits import parse

    from mcp.ratelimit import SPARE_SHARE, StoreStorage

    worker = StoreStorage(f"orchestrator-store+sqlite:///{tmp_path / 'orchestrator.db'}")
    limit = SPARE_SHARE * 32  # some 250 batches taken per key, each a chance to lose units

    def places_admitted(key: str) -> list[int]:
        start = threading.Barrier(16)

        def hammer(_: int) -> list[int]:
            start.wait()
            places = []
            while (value := worker.count(key, 3600).value) <= limit:
                places.append(value)
            return places

        with ThreadPoolExecutor(16) as pool:
            return sorted(p for places in pool.map(hammer, range(16)) for p in places)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands often, as in a busy worker
    try:
        for client in range(8):
            key = parse(f"{limit} per hour").key_for(f"ip:127.0.0.{client + 1}", "default")
            assert places_admitted(key) == list(range(1, limit + 1)), key
    finally:
        sys.setswitchinterval(switch)
