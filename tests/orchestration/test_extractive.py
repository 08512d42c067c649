"""The offline provider does real work: plans from facets and documents, cites what it
quotes, keeps citation tags through synthesis, and is deterministic."""

from __future__ import annotations

import asyncio
import re

import pytest

from orchestration.budget import UsageMeter
from orchestration.errors import BudgetExhausted
from orchestration.models import Budget, Hit, Source, Subtask
from orchestration.pricing import PriceTable
from orchestration.providers.extractive import ExtractiveProvider
from orchestration.agent import adding
from orchestration.text import BM25, claims, established, split_sentences, strip_citations, tokenize

PASSAGES = [
    Hit("Deployment — Caddy", "docs/deployment.md#caddy", "", "local",
        text="Caddy proxies the service at /mcp. The reverse_proxy block needs flush_interval -1 so that "
             "SSE events are not buffered. Caddy obtains certificates automatically."),
    Hit("Cooking — Bread", "docs/bread.md", "", "local",
        text="Bread dough rises when yeast ferments sugars. Knead the dough for ten minutes before baking."),
    Hit("Operations — Streams", "docs/ops.md#streams", "", "local",
        text="Each SSE stream sends a keep-alive comment every fifteen seconds. Streams close after the "
             "terminal event of their task."),
]


def meter() -> UsageMeter:
    return UsageMeter(Budget(), PriceTable())


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("n", [1, 3, 8, 20])
def test_plan_has_exactly_n_distinct_subtasks(n):
    context = [Hit("Deployment — Caddy reverse proxy", "u1", "", "local", metadata={"heading": "Caddy reverse proxy"})]
    plan = run(ExtractiveProvider().plan("How do I run the service behind Caddy and systemd?", n, context, meter()))
    assert len(plan) == n
    assert len({s.title for s in plan}) == n
    assert [s.subtask_id for s in plan] == [f"subtask_{i}" for i in range(1, n + 1)]
    if n >= 3:
        titles = " ".join(s.title for s in plan)
        assert "systemd" in titles.lower() and "Caddy reverse proxy" in titles


def test_finding_cites_the_passage_it_quotes_and_ignores_unrelated_ones():
    subtask = Subtask("subtask_1", "Unbuffered SSE behind Caddy", "caddy sse buffering flush_interval")
    text = run(ExtractiveProvider().write_finding(subtask, PASSAGES, meter()))
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    assert cited and cited <= {1, 3}
    for sentence in split_sentences(text):
        ref = int(re.search(r"\[(\d+)\]", sentence).group(1))
        plain = re.sub(r"\s*\[\d+\]", "", sentence)
        assert plain.rstrip(".") in PASSAGES[ref - 1].text


def test_finding_without_relevant_passages_says_so():
    subtask = Subtask("subtask_1", "Quantum chromodynamics", "quark gluon plasma")
    text = run(ExtractiveProvider().write_finding(subtask, PASSAGES, meter()))
    assert text.startswith("No passage in the available sources addresses") and "[" not in text


def test_synthesis_keeps_only_input_tags_and_drops_repeats():
    parts = [("Proxy", "Caddy needs flush_interval -1 for SSE [S1]. Certificates are automatic [S2]."),
             ("Streams", "Caddy needs flush_interval -1 for SSE [S1]. Keep-alive comments come every 15 s [S3].")]
    report = run(ExtractiveProvider().synthesize("How do SSE streams pass through Caddy?", "camina", parts, meter()))
    assert report.startswith("## Summary") and "## Findings" in report
    assert set(re.findall(r"\[S\d+\]", report)) <= {"[S1]", "[S2]", "[S3]"}
    findings = report.split("## Findings", 1)[1]
    assert findings.count("flush_interval -1") == 1


def test_synthesis_keeps_a_lower_case_quote_run_on_after_a_repeated_one():
    """Findings run quotes together; a quote that starts lower-case after another's citation
    is a sentence of its own, not dropped with the repeated quote before it."""
    parts = [("Wrappers", "Update a wrapper function to look like the wrapped function [S1]."),
             ("Partials", "Update a wrapper function to look like the wrapped function [S1]. "
                          "partial objects are callable and can have attributes, like Union[X, None] [S2].")]
    report = run(ExtractiveProvider().synthesize("What do wrappers and partials do?", "drummer", parts, meter()))
    partials = report.split("### Partials", 1)[1]
    assert "partial objects are callable and can have attributes, like Union[X, None] [S2]." in partials
    assert "Update a wrapper function" not in partials  # the repeat is still dropped
    assert claims("A [S1]. b c [2]: then Optional[X] is Union[X, None] here [S3].") == [
        "A [S1].", "b c [2]:", "then Optional[X] is Union[X, None] here [S3]."]


def test_summary_cites_sources_by_id():
    sources = [Source("S1", "Caddy", "u1", "local", "Caddy proxies the service and flushes SSE events at once."),
               Source("S2", "Bread", "u2", "local", "Bread dough rises when yeast ferments the sugars.")]
    text = run(ExtractiveProvider().summarize("caddy sse", sources, meter()))
    assert "[S1]" in text and text.index("## Top results") > text.index("[S1]")


def test_deterministic():
    subtask = Subtask("subtask_1", "SSE", "sse stream caddy")
    runs = {run(ExtractiveProvider().write_finding(subtask, PASSAGES, meter())) for _ in range(3)}
    assert len(runs) == 1


def test_every_call_is_accounted_and_an_exhausted_budget_refuses():
    m = meter()
    run(ExtractiveProvider().plan("caddy and systemd", 2, [], m))
    assert m.usage.llm_calls == 1 and m.usage.by_model["extractive"]["cost_usd"] == 0
    m.budget.exhausted = True
    with pytest.raises(BudgetExhausted):
        run(ExtractiveProvider().plan("caddy and systemd", 2, [], m))


def test_sentences_and_bm25():
    assert split_sentences("Foo works [S3]. Bar, e.g. baz, is fine. Version 1.5 of gunicorn.conf.py runs.") == [
        "Foo works [S3].", "Bar, e.g. baz, is fine.", "Version 1.5 of gunicorn.conf.py runs."]
    assert split_sentences("## Title\n- item one here\n```\ncode line\n```\nTail sentence.") == [
        "Title", "item one here", "Tail sentence."]
    assert tokenize("Workers streaming [S3]") == ["worker", "stream"]
    docs = [tokenize(t) for t in ("bread and yeast", "caddy proxies sse streams", "sse is server sent events")]
    scores = BM25(docs).scores(tokenize("caddy sse"))
    assert scores.index(max(scores)) == 1


def test_a_follow_up_quotes_what_earlier_rounds_did_not():
    """A follow-up subtask knows the sentences earlier rounds quoted: the writer gives them no
    credit and quotes the passages' other sentences on the subtask instead, still cited."""
    subtask = Subtask("subtask_5", "SSE through Caddy", "caddy sse events streams")
    first = run(ExtractiveProvider().write_finding(subtask, PASSAGES, meter()))
    assert "flush_interval -1" in first  # the sentence a first round quotes
    known = [strip_citations(c) for c in claims(first) if "flush_interval" in c]
    follow_up = Subtask("subtask_5", "SSE through Caddy", "caddy sse events streams", round=2,
                        parent="SSE through Caddy", known=known)
    text = run(ExtractiveProvider().write_finding(follow_up, PASSAGES, meter()))
    assert "flush_interval" not in text
    quoted = [strip_citations(c) for c in claims(text)]
    assert quoted and not set(quoted) & set(known)
    for sentence in claims(text):  # what it quotes instead is still a cited sentence of its passage
        ref = int(re.search(r"\[(\d+)\]", sentence).group(1))
        assert strip_citations(sentence).rstrip(".") in PASSAGES[ref - 1].text
    assert len({run(ExtractiveProvider().write_finding(follow_up, PASSAGES, meter())) for _ in range(3)}) == 1


def test_a_follow_up_search_bringing_only_quoted_sentences_brings_nothing_new():
    known = ["Caddy proxies the service at /mcp.",
             "The reverse_proxy block needs flush_interval -1 so that SSE events are not buffered.",
             "Caddy obtains certificates automatically."]
    first_round = Subtask("subtask_1", "Caddy", "caddy proxy")
    follow_up = Subtask("subtask_5", "Caddy", "caddy proxy", round=2, parent="Caddy", known=known)
    assert adding(PASSAGES, first_round) == PASSAGES  # a first round takes every passage as new
    # the Caddy passage holds only quoted sentences; the bread and streams passages say nothing of Caddy
    assert adding(PASSAGES, follow_up) == []
    more = Hit("Deployment — TLS", "docs/deployment.md#tls", "", "local",
               text="Caddy renews its certificates thirty days before they expire.")
    assert adding([*PASSAGES, more], follow_up) == [more]


def test_established_keeps_the_sentences_findings_stated_about_a_gap():
    findings = ["Caddy proxies the service at /mcp [1]. Bread dough rises [2].",
                "Streams close after the terminal event [1]. Caddy proxies the service at /mcp [3]."]
    assert established(findings, "How does Caddy proxy the service?", 5) == ["Caddy proxies the service at /mcp."]
    assert established(findings, "bread or streams", 1) == ["Bread dough rises."]
    assert established(findings, "quarks", 5) == []
