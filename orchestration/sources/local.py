"""Local documents: a SQLite FTS5 index over Markdown, reStructuredText, HTML and text
files under a directory, chunked by section and refreshed incrementally by mtime."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..interfaces import SearchSource
from ..models import Hit
from ..sqlite_pool import ConnectionPool

EXTENSIONS = frozenset({".md", ".markdown", ".txt", ".rst", ".html", ".htm"})
MAX_FILE_BYTES = 5_000_000
CHUNK_CHARS = 3000
# design: the chunks of one section a search may return, best first; more would crowd out
# other sections, one would hide a fact in the section's second-best chunk for good.
CHUNKS_PER_URL = 2
SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z(\"'`])")
TEXT_GROUP_CHARS = 1500
SNIPPET_CHARS = 240
READERS = 4  # connections a process keeps open for searches
# design: heading and title columns outweigh body; url/path are stored but not indexed.
BM25 = "bm25(chunks, 2.0, 4.0, 1.0, 0.0, 0.0)"
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from how i if in into is it its near not of on or so "
    "than that the their then there these this to was what when where which who why will with you your".split()
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, mtime INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(
    title, heading, body, url UNINDEXED, path UNINDEXED, tokenize='porter unicode61');
"""


def slugify(heading: str) -> str:
    """GitHub-style anchor: lower-case, punctuation other than `-`/`_` dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _squash(text: str) -> str:
    return " ".join(text.split())


def _lines(lines: list[str]) -> str:
    """Section text with its line structure (lists, code, paragraphs) kept and blank runs folded."""
    text = "\n".join(" ".join(line.split()) if line.strip() else "" for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _inline(text: str) -> str:
    """Markdown inline markup to plain text (links, images, emphasis stars, backticks)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return _squash(re.sub(r"[*`]", "", text))


class _Sections:
    """Collects (heading, lines) sections; the first level-1 heading titles the document
    and the text under it stays in the intro section (heading "")."""

    def __init__(self) -> None:
        self.title: str | None = None
        self.items: list[tuple[str, list[str]]] = [("", [])]

    def heading(self, level: int, text: str) -> None:
        if level == 1 and self.title is None:
            self.title = text
            if not self.items[-1][0]:
                return
        self.items.append((text, []))

    def add(self, text: str) -> None:
        self.items[-1][1].append(text)


def _markdown(text: str, out: _Sections) -> None:
    lines = text.splitlines()
    if lines and lines[0].strip() == "---" and "---" in (s.strip() for s in lines[1:]):
        lines = lines[[s.strip() for s in lines].index("---", 1) + 1:]  # front matter
    fence = ""
    for line in lines:
        marker = re.match(r"\s{0,3}(`{3,}|~{3,})", line)
        if marker and (not fence or marker.group(1).startswith(fence)):
            fence = "" if fence else marker.group(1)
            out.add(marker.group(1))  # kept so readers of the text can tell code from prose
            continue
        head = None if fence else re.match(r"\s{0,3}(#{1,3})\s+(.*?)(?:\s+#+)?\s*$", line)
        if head:
            out.heading(len(head.group(1)), _inline(head.group(2)))
        else:
            out.add(line)


_RST_ADORNMENT = re.compile(r"""^([=\-~^`:'"#*+_.!$%&,;<>?@\\/|])\1+\s*$""")


def _rst(text: str, out: _Sections) -> None:
    lines, styles, i = text.splitlines(), [], 0
    while i < len(lines):
        line, nxt = lines[i], lines[i + 1] if i + 1 < len(lines) else ""
        after = lines[i + 2] if i + 2 < len(lines) else ""
        if _RST_ADORNMENT.match(line) and nxt.strip() and after.strip() == line.strip():
            title, style, i = nxt.strip(), (line.strip()[0], True), i + 3
        elif (line.strip() and not line[0].isspace() and not _RST_ADORNMENT.match(line)
              and _RST_ADORNMENT.match(nxt) and len(nxt.rstrip()) >= len(line.rstrip())):
            title, style, i = line.strip(), (nxt.strip()[0], False), i + 2
        else:
            out.add(line)
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        level = styles.index(style) + 1
        if level <= 3:
            out.heading(level, title)
        else:
            out.add(title)


class _HTML(HTMLParser):
    BLOCK = frozenset("p div li ul ol br tr td th pre blockquote section article table dt dd h4 h5 h6".split())

    def __init__(self, out: _Sections) -> None:
        super().__init__()
        self.out, self.skip, self.head_level, self.buf, self.page_title = out, 0, 0, [], ""
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in ("h1", "h2", "h3"):
            self.head_level, self.buf = int(tag[1]), []
        elif tag == "title":
            self.in_title = True
        elif tag in self.BLOCK:
            self.out.add("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in ("h1", "h2", "h3") and self.head_level:
            self.out.heading(self.head_level, _squash("".join(self.buf)))
            self.head_level = 0
        elif tag == "title":
            self.in_title = False
        elif tag in self.BLOCK:
            self.out.add("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.head_level:
            self.buf.append(data)
        elif self.in_title:
            self.page_title += data
        else:
            self.out.add(data)


def _plain(text: str, out: _Sections) -> None:
    group: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        group.append(para)
        if sum(len(p) for p in group) >= TEXT_GROUP_CHARS:
            out.add("\n".join(group))
            out.items.append(("", []))
            group = []
    out.add("\n".join(group))


def _pieces(text: str, size: int) -> Iterator[str]:
    """`text` cut into pieces of at most about `size` characters: at a paragraph break, else
    after a sentence, else at a word boundary (a sentence cut in two is a fact no piece states)."""
    while len(text) > size:
        cut = text.rfind("\n\n", 0, size)
        if cut <= size // 2:
            ends = [m.end() for m in SENTENCE_END.finditer(text, size // 2, size)]
            cut = ends[-1] if ends else text.rfind(" ", 0, size)
        cut = cut if cut > size // 2 else size
        yield text[:cut]
        text = text[cut:].lstrip()
    if text:
        yield text


def chunk_file(path: Path, rel: str, prefix: str, text: str) -> list[tuple[str, str, str, str, str]]:
    """(title, heading, body, url, path) rows for one document."""
    out, suffix = _Sections(), path.suffix.lower()
    if suffix in (".md", ".markdown"):
        _markdown(text, out)
    elif suffix == ".rst":
        _rst(text, out)
    elif suffix in (".html", ".htm"):
        parser = _HTML(out)
        parser.feed(text)
        parser.close()
        out.title = out.title or _squash(parser.page_title) or None
    else:
        _plain(text, out)
    title, base, seen, rows = out.title or path.stem, f"{prefix}/{rel}", {}, []
    for heading, lines in out.items:
        # design: Markdown and plain text keep their lines (lists, code fences) for sentence
        # splitting; HTML and reST pieces are inline fragments, joined into running text.
        body = _lines(lines) if suffix in (".md", ".markdown", ".txt") else _squash(" ".join(lines))
        if not body and not heading:
            continue
        url = base
        if heading:
            slug = slugify(heading)
            seen[slug] = seen.get(slug, -1) + 1
            url = f"{base}#{slug}-{seen[slug]}" if seen[slug] else f"{base}#{slug}"
        # design: a long section becomes several rows sharing its URL; search keeps the best one.
        rows += [(title, heading, piece, url, rel) for piece in list(_pieces(body, CHUNK_CHARS)) or [""]]
    return rows


def query_terms(query: str) -> list[str]:
    """Word tokens of a free-text query, lower-cased, without stopwords or duplicates."""
    return list(dict.fromkeys(t for t in re.findall(r"\w+", query.lower()) if t not in STOPWORDS))[:32]


def match_expression(query: str) -> str:
    """A safe FTS5 MATCH: each token quoted (no operators survive), ORed so partial matches rank."""
    return " OR ".join(f'"{t}"' for t in query_terms(query))


def snippet(text: str, terms: list[str], size: int = SNIPPET_CHARS) -> str:
    """About `size` characters starting at the sentence with most query-term matches."""
    text = _squash(re.sub(r"(?m)^(`{3,}|~{3,})$", " ", text))
    starts = [0] + [m.end() for m in re.finditer(r"[.!?]\s+", text)]

    def hits(start: int) -> int:
        words = set(re.findall(r"\w+", re.split(r"[.!?]\s", text[start:start + 400])[0].lower()))
        prefixes = {w[:4] for w in words if len(w) >= 4}
        # a term counts when a word equals it or, for terms of 4+ letters, shares its first four
        return sum(t in words or (len(t) >= 4 and t[:4] in prefixes) for t in terms)

    best = max(starts, key=lambda s: (hits(s), -s))
    piece = text[best:]
    if len(piece) > size:
        piece = piece[:size].rsplit(" ", 1)[0] + " …"
    return ("… " if best else "") + piece


class LocalDocsSource(SearchSource):
    name = "local"
    description = "Full-text search over the service's local documentation files (SQLite FTS5)."

    def __init__(self, docs_dir: str | Path, index_path: str | Path, refresh_interval: float = 5.0) -> None:
        self.docs_dir = Path(docs_dir).resolve()
        self.index_path = Path(index_path)
        self.refresh_interval = refresh_interval
        self.prefix = self.docs_dir.name or "docs"
        self._lock = threading.Lock()
        self._ready = False
        # design: the searches of a process share a few connections (orchestration.sqlite_pool)
        self._readers = ConnectionPool(self._connect, READERS)
        self._next_refresh = 0.0
        try:
            with closing(sqlite3.connect(":memory:")) as probe:
                probe.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61')")
        except sqlite3.OperationalError as exc:
            raise RuntimeError(
                f"the local docs source needs SQLite with FTS5 (sqlite {sqlite3.sqlite_version}): {exc}") from exc

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "docs_dir": str(self.docs_dir), "docs_dir_exists": self.docs_dir.is_dir(),
                "index_path": str(self.index_path)}

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        if not match_expression(query) or limit <= 0 or not self.docs_dir.is_dir():
            return []
        try:
            return await asyncio.to_thread(self._search, query, limit)
        except sqlite3.Error as exc:
            raise SourceError(f"local docs index {self.index_path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # design: the index is set up and refreshed on a connection of its own, closed after;
        # searches use the readers' pool, whose connections serve one thread at a time.
        conn = sqlite3.connect(self.index_path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _setup(self, conn: sqlite3.Connection) -> None:
        for attempt in range(50):  # switching to WAL takes a lock busy_timeout may not wait for
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        with self._write(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def _search(self, query: str, limit: int) -> list[Hit]:
        with self._lock:
            if not self._ready:
                self.index_path.parent.mkdir(parents=True, exist_ok=True)
                with closing(self._connect()) as conn:
                    self._setup(conn)
                self._ready = True
            if time.monotonic() >= self._next_refresh:
                # design: one process refreshes at a time; the others wait, then find every
                # file already indexed instead of parsing the whole corpus once each.
                with open(self.index_path.with_name(self.index_path.name + ".lock"), "a+b") as lock, \
                        closing(self._connect()) as conn:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    self._refresh(conn)
                self._next_refresh = time.monotonic() + self.refresh_interval
        with self._readers.connection() as conn:
            rows = conn.execute(
                f"SELECT title, heading, body, url, path, rowid, {BM25} AS rank FROM chunks WHERE chunks MATCH ? "
                "ORDER BY rank LIMIT ?", (match_expression(query), limit * 4)).fetchall()
        terms, hits, seen = query_terms(query), [], {}
        for title, heading, body, url, rel, rowid, rank in rows:
            if len(hits) == limit:
                break  # design: snippets cost Python time; only the hits returned get one
            if seen.get(url, 0) == CHUNKS_PER_URL:
                continue
            seen[url] = seen.get(url, 0) + 1
            # design: `chunk` tells the chunks of one long section apart (ranking.passage_key),
            # so an agent holding one of them still takes another as new evidence.
            hits.append(Hit(title=f"{title} — {heading}" if heading else title, url=url,
                            snippet=snippet(body, terms), source=self.name, text=body, score=-rank,
                            metadata={"path": rel, "heading": heading, "chunk": rowid}))
        return hits

    def _refresh(self, conn: sqlite3.Connection) -> None:
        """Re-index new and changed files, forget removed ones."""
        on_disk: dict[str, tuple[int, int, Path]] = {}
        for root, dirs, files in os.walk(self.docs_dir):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                path = Path(root, name)
                if name.startswith(".") or path.suffix.lower() not in EXTENSIONS:
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                if st.st_size <= MAX_FILE_BYTES:
                    on_disk[path.relative_to(self.docs_dir).as_posix()] = (st.st_mtime_ns, st.st_size, path)
        known = {p: (m, s) for p, m, s in conn.execute("SELECT path, mtime, size FROM files")}
        for rel, (mtime, size, path) in on_disk.items():
            if known.get(rel) != (mtime, size):
                self._reindex(conn, rel, path, mtime, size)
        for rel in known.keys() - on_disk.keys():
            with self._write(conn):
                conn.execute("DELETE FROM chunks WHERE path = ?", (rel,))
                conn.execute("DELETE FROM files WHERE path = ?", (rel,))

    def _reindex(self, conn: sqlite3.Connection, rel: str, path: Path, mtime: int, size: int) -> None:
        try:
            rows = chunk_file(path, rel, self.prefix, path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return  # vanished between stat and read; the next refresh forgets it
        with self._write(conn):
            # design: another process may have indexed this version meanwhile; skip if so.
            if conn.execute("SELECT mtime, size FROM files WHERE path = ?", (rel,)).fetchone() == (mtime, size):
                return
            conn.execute("DELETE FROM chunks WHERE path = ?", (rel,))
            conn.executemany("INSERT INTO chunks(title, heading, body, url, path) VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("INSERT OR REPLACE INTO files(path, mtime, size) VALUES (?, ?, ?)", (rel, mtime, size))
