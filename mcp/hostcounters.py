"""Fixed-window counters in a memory-mapped file, shared by every worker of one host.

The rate limiter's per-request count (mcp.ratelimit): a thread lock and an flock around a
few bytes of shared memory cost microseconds, where a store write per request cost a
serialised SQLite transaction (or a Redis round trip). The table is an open-addressing
hash of key digests; an entry lives until its window expires and its slot is then reused."""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from orchestration.forks import generation

SLOTS = 1 << 15
# How many neighbouring slots a key may occupy: a lookup reads them all, so it stays cheap.
PROBES = 16
SLOT = struct.Struct("<16sdqqq")
EMPTY = bytes(16)


class Entry(NamedTuple):
    """One key's window on this host: `value` is the count the limiter is told; `tokens` and
    `seen` serve the Redis reservation (units this host holds unspent, and the shared total
    it last saw)."""

    expires: float
    value: int = 0
    tokens: int = 0
    seen: int = 0


class HostCounters:
    """The table. Open it anywhere: each process maps the file itself after fork."""

    def __init__(self, path: str | Path, slots: int = SLOTS, probes: int = PROBES):
        self.path = Path(path)
        self.slots = slots
        self.probes = min(probes, slots)
        self._lock = threading.Lock()
        self._mapped_after = -1  # the fork generation of the process that mapped the file
        self._fd = -1
        self._table: Table | None = None

    def _mapped(self) -> Table:
        # design: an flock taken through a descriptor inherited across fork is shared with the
        # parent, not exclusive, so every process opens the file for itself.
        if self._mapped_after != generation():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            size = self.slots * SLOT.size
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._fd, self._table = fd, Table(mmap.mmap(fd, size), self.slots, self.probes)
            self._mapped_after = generation()
        assert self._table is not None
        return self._table

    def locked(self) -> HostCounters:
        """`with counters.locked() as table`: the table, held by this thread alone among
        every thread of every process.

        design: the counters are their own context manager, not a contextlib generator, as
        they are entered on every request (the generator was a third of a count's own cost)."""
        return self

    def __enter__(self) -> Table:
        self._lock.acquire()
        try:
            table = self._mapped()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        return table

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def clear(self, key: str | None = None) -> None:
        """Forget one key, or every key."""
        with self.locked() as table:
            if key is None:
                table.map[:] = bytes(len(table.map))
            else:
                table.drop(key)


class Table:
    """The mapped slots while the lock is held."""

    def __init__(self, map_: mmap.mmap, slots: int, probes: int):
        self.map = map_
        self.slots = slots
        self.probes = probes

    @staticmethod
    def digest(key: str) -> bytes:
        return hashlib.blake2b(key.encode(), digest_size=16).digest()

    def _scan(self, digest: bytes, now: float) -> tuple[int | None, Entry | None, int | None]:
        """(slot of the key's live entry, that entry, first reusable slot)."""
        start = int.from_bytes(digest[:8], "little") % self.slots
        free = None
        for i in range(self.probes):
            slot = (start + i) % self.slots
            stored, expires, value, tokens, seen = SLOT.unpack_from(self.map, slot * SLOT.size)
            live = expires > now
            if stored == digest and live:
                return slot, Entry(expires, value, tokens, seen), free
            if free is None and (stored == EMPTY or not live):
                free = slot
        return None, None, free

    def lookup(self, key: str, now: float) -> tuple[tuple[int, bytes] | None, Entry | None]:
        """(where the key's entry goes, its entry in the current window or None). The place
        is None when every slot the key may use holds another live key."""
        digest = self.digest(key)
        slot, entry, free = self._scan(digest, now)
        place = slot if slot is not None else free
        return (None if place is None else (place, digest)), entry

    def write(self, place: tuple[int, bytes], entry: Entry) -> None:
        slot, digest = place
        SLOT.pack_into(self.map, slot * SLOT.size, digest, *entry)

    def drop(self, key: str) -> None:
        digest = self.digest(key)
        slot, _, _ = self._scan(digest, float("-inf"))
        if slot is not None:
            SLOT.pack_into(self.map, slot * SLOT.size, EMPTY, 0.0, 0, 0, 0)
