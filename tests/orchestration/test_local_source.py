"""The local documents source: SQLite FTS5 over real files in tmp_path."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from orchestration.sources.local import LocalDocsSource, match_expression, slugify

GUIDE = """# Deployment Guide

This guide explains how to run the service.

## Reverse proxy with Caddy

Caddy terminates TLS and forwards requests to gunicorn. Keep the proxy timeouts long.

## Systemd unit

Install the unit file and enable it at boot.

```ini
# not a heading
ExecStart=/srv/app/start.sh --frobnicate
```
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make(tmp_path: Path, **kwargs) -> LocalDocsSource:
    return LocalDocsSource(tmp_path / "docs", tmp_path / "data" / "index.db", **kwargs)


def search(source: LocalDocsSource, query: str, limit: int = 10):
    return asyncio.run(source.search(query, limit))


def test_finds_a_markdown_section_and_its_anchor(tmp_path):
    write(tmp_path / "docs" / "ops" / "guide.md", GUIDE)
    source = make(tmp_path)
    hits = search(source, "caddy TLS")
    top = hits[0]
    assert top.url == "docs/ops/guide.md#reverse-proxy-with-caddy"
    assert top.title == "Deployment Guide — Reverse proxy with Caddy"
    assert top.source == "local" and top.score > 0
    assert top.metadata == {"path": "ops/guide.md", "heading": "Reverse proxy with Caddy",
                            "chunk": top.metadata["chunk"]}
    assert "Caddy terminates TLS" in top.snippet and top.text.startswith("Caddy terminates")
    intro = search(source, "explains")[0]
    assert intro.url == "docs/ops/guide.md" and intro.title == "Deployment Guide"


def test_code_is_kept_fenced_in_the_text_and_out_of_the_snippet(tmp_path):
    write(tmp_path / "docs" / "guide.md", GUIDE)
    hit = search(make(tmp_path), "frobnicate")[0]
    assert hit.url == "docs/guide.md#systemd-unit"
    assert "--frobnicate" in hit.text and "# not a heading" in hit.text
    assert "```\n# not a heading" in hit.text  # the fence stays so sentence splitting can skip code
    assert "```" not in hit.snippet


def test_heading_words_outrank_body_mentions(tmp_path):
    filler = " ".join(["The service has many moving parts and settings."] * 5)
    write(tmp_path / "docs" / "b.md", f"# Misc\n\n## Notes\n\n{filler} Webhook retries happen. {filler}\n")
    write(tmp_path / "docs" / "a.md", "# Hooks\n\n## Webhook retries\n\nDelivery is attempted again later.\n")
    hits = search(make(tmp_path), "webhook retries")
    assert [h.url for h in hits] == ["docs/a.md#webhook-retries", "docs/b.md#notes"]
    assert hits[0].score > hits[1].score


def test_edited_file_is_reindexed(tmp_path):
    path = write(tmp_path / "docs" / "animals.md", "# Animals\n\n## Stripes\n\nThe zebra grazes.\n")
    source = make(tmp_path, refresh_interval=0)
    assert search(source, "zebra")
    write(path, "# Animals\n\n## Necks\n\nThe giraffe browses.\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert search(source, "zebra") == []
    assert search(source, "giraffe")[0].url == "docs/animals.md#necks"


def test_refresh_is_throttled(tmp_path):
    write(tmp_path / "docs" / "a.md", "# A\n\nalpha\n")
    source = make(tmp_path, refresh_interval=3600)
    assert search(source, "alpha")
    write(tmp_path / "docs" / "b.md", "# B\n\nbravo\n")
    assert search(source, "bravo") == []
    assert search(make(tmp_path), "bravo")  # a fresh instance refreshes on first use


def test_deleted_file_disappears(tmp_path):
    write(tmp_path / "docs" / "keep.md", "# Keep\n\nwombat\n")
    gone = write(tmp_path / "docs" / "gone.md", "# Gone\n\nwombat platypus\n")
    source = make(tmp_path, refresh_interval=0)
    assert {h.metadata["path"] for h in search(source, "wombat")} == {"keep.md", "gone.md"}
    gone.unlink()
    assert [h.metadata["path"] for h in search(source, "wombat")] == ["keep.md"]
    assert search(source, "platypus") == []


def test_html_chunking(tmp_path):
    write(tmp_path / "docs" / "page.html", """<html><head><title>Browser Title</title>
<style>.secretstyle { color: red }</script></style><script>var secretscript = 1;</script></head>
<body><h1>Page <em>Title</em></h1><p>Welcome text.</p>
<h2>Install Steps</h2><p>Run the <b>installer</b> twice.</p><ul><li>one</li><li>two</li></ul>
<h3>Q&amp;A</h3><p>Answers about quokkas.</p><h4>Deep</h4><p>nested detail</p></body></html>""")
    source = make(tmp_path)
    hit = search(source, "installer")[0]
    assert hit.url == "docs/page.html#install-steps" and hit.title == "Page Title — Install Steps"
    assert hit.text == "Run the installer twice. one two"
    qa = search(source, "quokkas")[0]
    assert qa.url == "docs/page.html#qa" and "Deep nested detail" in qa.text
    assert search(source, "secretscript") == [] and search(source, "secretstyle") == []


def test_rst_chunking(tmp_path):
    write(tmp_path / "docs" / "manual.rst", """======
Manual
======

Intro about the manual.

Configuration
=============

Text about knobs.

Sub part
--------

More about dials.

Deeper
~~~~~~

Level four text about levers.
""")
    source = make(tmp_path)
    sub = search(source, "dials")[0]
    assert sub.url == "docs/manual.rst#sub-part" and sub.title == "Manual — Sub part"
    assert search(source, "knobs")[0].url == "docs/manual.rst#configuration"
    intro = search(source, "intro")[0]
    assert intro.url == "docs/manual.rst" and intro.title == "Manual"
    levers = search(source, "levers")[0]
    assert levers.url == "docs/manual.rst#sub-part" and "dials. Deeper Level four" in levers.text  # level 4: body


def test_plain_text_and_duplicate_headings(tmp_path):
    paragraphs = "\n\n".join(f"Paragraph {i} " + "lorem ipsum " * 40 for i in range(10))
    write(tmp_path / "docs" / "notes.txt", paragraphs + "\n\nThe capybara sleeps.\n")
    write(tmp_path / "docs" / "faq.md", "# FAQ\n\n## Setup\n\nfirst aardvark\n\n## Setup\n\nsecond aardvark\n")
    write(tmp_path / "docs" / "skip.py", "capybara = 1\n")
    source = make(tmp_path)
    hit = search(source, "capybara")
    assert [h.url for h in hit] == ["docs/notes.txt"] and hit[0].title == "notes"
    assert len(hit[0].text) < 3000
    assert sorted(h.url for h in search(source, "aardvark")) == ["docs/faq.md#setup", "docs/faq.md#setup-1"]


def test_fts_syntax_in_queries_is_harmless(tmp_path):
    write(tmp_path / "docs" / "guide.md", GUIDE)
    source = make(tmp_path)
    for query in ['"caddy', "(caddy", "caddy AND", "caddy AND OR NOT proxy", "*", "prox*", "title:caddy",
                  "-caddy", "NEAR(caddy proxy)", "caddy^", "{heading}: caddy", "caddy' ; DROP TABLE files;--"]:
        search(source, query)
    assert search(source, "heading:caddy")[0].url.endswith("#reverse-proxy-with-caddy")
    for empty in ["", "   ", "AND", "the and of", '"*"()-:']:
        assert search(source, empty) == []
    assert match_expression('Caddy "proxy" AND caddy') == '"caddy" OR "proxy"'


def test_missing_docs_dir(tmp_path):
    source = make(tmp_path)
    assert search(source, "anything") == []
    info = source.describe()
    assert info["enabled"] is True and info["docs_dir"] == str(tmp_path / "docs")
    assert info["docs_dir_exists"] is False


def test_slugify_is_github_style():
    assert slugify("Reverse proxy (Caddy) & TLS!") == "reverse-proxy-caddy--tls"
    assert slugify("snake_case-name v2.0") == "snake_case-name-v20"


def test_two_instances_share_an_index_concurrently(tmp_path):
    for i in range(40):
        write(tmp_path / "docs" / f"d{i}.md", f"# Doc {i}\n\n## Part {i}\n\nshared words and token{i}\n")
    index = tmp_path / "data" / "index.db"
    sources = [LocalDocsSource(tmp_path / "docs", index, refresh_interval=0) for _ in range(2)]
    errors: list[BaseException] = []

    def worker(source: LocalDocsSource, n: int) -> None:
        try:
            for round_ in range(15):
                if n == 0:  # one thread keeps editing files so refreshes have real work
                    path = tmp_path / "docs" / f"d{round_}.md"
                    write(path, f"# Doc {round_}\n\n## Part\n\nshared words edited{round_}\n")
                    os.utime(path, ns=(0, 10**18 + round_))
                assert search(source, "shared words", 5)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(sources[i % 2], i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert search(sources[1], "edited14")[0].url == "docs/d14.md#part"
    assert search(sources[0], "token3") == []


def test_a_long_section_returns_its_best_chunks_each_tagged(tmp_path):
    """A section longer than a chunk is several rows under one URL; a search returns up to
    CHUNKS_PER_URL of them, told apart by metadata `chunk`, so a fact in the second-best chunk
    is not hidden behind the best one."""
    from orchestration.sources.local import CHUNK_CHARS, CHUNKS_PER_URL

    filler = " ".join(["The service has many moving parts and settings."] * 40)
    parts = [f"Part {n} names the gizmo once. {filler}" for n in range(4)]
    write(tmp_path / "docs" / "long.md", "# Long\n\n## Gizmos\n\n" + "\n\n".join(parts) + "\n")
    hits = search(make(tmp_path), "gizmo")
    assert len(parts[0]) * 4 > CHUNK_CHARS * CHUNKS_PER_URL
    assert [h.url for h in hits] == ["docs/long.md#gizmos"] * CHUNKS_PER_URL
    assert len({h.metadata["chunk"] for h in hits}) == CHUNKS_PER_URL
    assert len({h.text for h in hits}) == CHUNKS_PER_URL
