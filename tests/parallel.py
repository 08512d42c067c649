"""How the suite shares the machine when ./test.sh runs it in several processes (pytest-xdist,
`-n`): which tests go to one process together, which start first, and which run alone.
Without `-n` (a plain `python -m pytest`) none of this does anything.

- A module whose tests share a module-scoped fixture (a service, a browser) is one unit of
  work, so that fixture starts once, not once per process.
- Tests marked `serial` (wall-clock bounds, hundreds of streams) run with no other test at
  the same time: they take a lock the others share (see `Turns`). They form one unit and go
  first, so the others wait for them once.
- Then the slow end-to-end tests, so that none of them starts last and runs alone."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

import pytest

SERIAL = "serial"


def in_a_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def shared_tmp(config: pytest.Config) -> Path:
    """A directory of this run that every worker process sees (the parent of their own
    basetemps); the basetemp itself when the run is not split."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if in_a_worker(config) else base


def is_serial(item: pytest.Item) -> bool:
    return item.get_closest_marker(SERIAL) is not None


def module_scoped(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return bool(info) and any(d.scope in ("module", "package", "class")
                              for defs in info.name2fixturedefs.values() for d in defs)


def unit(item: pytest.Item) -> str | None:
    if is_serial(item):
        return SERIAL
    if module_scoped(item):
        return item.nodeid.split("::", 1)[0]
    return None


def rank(item: pytest.Item) -> int:
    return 0 if is_serial(item) else 1 if item.get_closest_marker("slow") else 2


UNITS_FILE = "units.json"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Any:
    """In each worker: order the tests by rank, a unit at a time, and leave the units where
    the scheduler (in the controlling process, which does not collect) finds them."""
    result = yield
    if not in_a_worker(config):
        return result
    ranks: dict[str, int] = {}
    for item in items:
        name = unit(item) or item.nodeid
        ranks[name] = min(ranks.get(name, 2), rank(item))
    # a unit keeps the order pytest gave its tests (module fixtures with params rely on it)
    items.sort(key=lambda item: ranks[unit(item) or item.nodeid])
    units = {item.nodeid: unit(item) for item in items if unit(item)}
    written = shared_tmp(config) / f"{UNITS_FILE}.{config.workerinput['workerid']}"
    written.write_text(json.dumps(units))
    written.replace(shared_tmp(config) / UNITS_FILE)  # every worker writes the same
    return result


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scope scheduling with this suite's units. design: not `--dist loadgroup` and
    xdist_group marks: xdist 3.8 renames the test ids to group them, which pytest 9.2's ids
    no longer allow, so the marks were silently ignored."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def __init__(self) -> None:
            super().__init__(config, log)
            self.units: dict[str, str] | None = None
            # units are handed out in the workers' order (see rank), not by size
            config.option.loadscopereorder = False

        def _split_scope(self, nodeid: str) -> str:
            if self.units is None:  # called once every worker has collected
                self.units = json.loads((shared_tmp(config) / UNITS_FILE).read_text())
            return self.units.get(nodeid, nodeid)

    return Units()


class Turns:
    """A readers-writer lock between the worker processes, on two flock files: every test holds
    the room shared, a serial test holds it alone. Both pass the gate first, so a serial test
    waiting for the room keeps new tests out instead of waiting for a gap that never comes."""

    def __init__(self, directory: Path):
        self.gate = open(directory / "turns-gate.lock", "a")
        self.room = open(directory / "turns-room.lock", "a")
        self.alone: bool | None = None

    def enter(self, alone: bool) -> None:
        if self.alone is True and alone:
            return  # consecutive serial tests keep the room
        self.leave()
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        self.alone = alone

    def leave(self) -> None:
        if self.alone is not None:
            fcntl.flock(self.room, fcntl.LOCK_UN)
            self.alone = None


_turns: Turns | None = None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Outermost, so that the wait is not counted by pytest-timeout; around setup and
    teardown too, so module services of other tests neither start nor stop meanwhile."""
    global _turns
    if not in_a_worker(item.config):
        return (yield)
    if _turns is None:
        _turns = Turns(shared_tmp(item.config))
    _turns.enter(is_serial(item))
    try:
        return (yield)
    finally:
        if not (is_serial(item) and nextitem is not None and is_serial(nextitem)):
            _turns.leave()
