"""The search orchestrator: typed agents query their sources in parallel; the lists are
fused with reciprocal rank fusion, de-duplicated by URL with provenance kept, and
summarised with citations. With `depth: 2` a second pass queries every agent's sources
again with the query expanded by salient words of the fused top results (pseudo-relevance
feedback); its lists join the same fusion and `found_by` records which pass found a result."""

from __future__ import annotations

import logging
import time

from .budget import UsageMeter
from .citations import evidence_for, passage_text, sources_section, verify_citations
from .concurrency import run_together
from .errors import BudgetExhausted, UnusableAnswer
from .interfaces import CheckpointStore, EventSink, Provider, SearchSource
from .models import AgentResult, Citation, Hit, Outcome, SearchRequest, Source, SynthesisResult, to_dict
from .ranking import RankedList, fuse, normalize_url
from .retrieval import query_sources
from .text import key_terms, tokenize

# Query expansion (depth 2): salient words of the best fused results added to the query.
EXPANSION_RESULTS, EXPANSION_TERMS = 5, 3

log = logging.getLogger(__name__)

# Which sources each agent type asks, best first (DESIGN §6).
AGENT_TYPE_SOURCES: dict[str, tuple[str, ...]] = {
    "web": ("web",),
    "news": ("web", "hackernews"),
    "general": ("web", "wikipedia"),
    "academic": ("arxiv", "semantic_scholar"),
    "encyclopedia": ("wikipedia",),
    "technical": ("github", "hackernews"),
    "social": ("hackernews",),
    "local": ("local",),
}
DEFAULT_AGENT_ORDER = ("web", "academic", "encyclopedia", "technical", "news", "local", "general", "social")


def plan_agents(request: SearchRequest) -> list[str]:
    """The agent type of each of the `num_agents` agents: the requested types in turn."""
    types = request.agent_types or list(DEFAULT_AGENT_ORDER)
    return [types[i % len(types)] for i in range(request.num_agents)]


class SearchOrchestrator:
    def __init__(
        self,
        provider: Provider,
        sources: list[SearchSource],
        events: EventSink,
        checkpoints: CheckpointStore,
        meter: UsageMeter,
    ):
        self.provider = provider
        self.sources = {s.name: s for s in sources if s.enabled}
        self.events = events
        self.checkpoints = checkpoints
        self.meter = meter
        self.request: SearchRequest | None = None
        self.lists: dict[str, list[RankedList]] = {}
        self.agent_results: dict[str, AgentResult] = {}
        self.summary: SynthesisResult | None = None

    def sources_for(self, agent_type: str) -> list[SearchSource]:
        """The enabled sources of a type; a type whose sources are all disabled falls back
        to the local documents, then to whatever is enabled, so an agent never sits idle."""
        chosen = [self.sources[n] for n in AGENT_TYPE_SOURCES.get(agent_type, ()) if n in self.sources]
        if not chosen and "local" in self.sources:
            chosen = [self.sources["local"]]
        return chosen or list(self.sources.values())[:1]

    async def run(self, request: SearchRequest) -> Outcome:
        self.request = request
        saved = await self.checkpoints.load()
        types = plan_agents(request)
        if not saved:
            await self.events.emit("workflow_start", {"orchestrator": "search", "query": request.query,
                                                      "agent_types": types}, progress=0.0)
        for key, value in saved.items():
            if key.startswith("agent:"):
                agent_id = key.split(":", 1)[1]
                self.agent_results[agent_id] = AgentResult.from_dict(value["result"])
                self.lists[agent_id] = [
                    RankedList(agent_id, rl["source"], [Hit(**h) for h in rl["hits"]]) for rl in value["lists"]
                ] + self.lists.get(agent_id, [])
            elif key.startswith("pass2:"):
                agent_id = key.split(":", 1)[1]
                self.lists[agent_id] = self.lists.get(agent_id, []) + [
                    RankedList(agent_id, rl["source"], [Hit(**h) for h in rl["hits"]], pass_number=2) for rl in value]
        if "summary" in saved:
            self.summary = SynthesisResult.from_dict(saved["summary"])
        agents = [(f"agent_{i}", t) for i, t in enumerate(types, start=1)]
        await run_together(self._run_agent(a, t) for a, t in agents if a not in self.agent_results)
        if request.depth >= 2:
            await self._expansion_pass(agents, saved)
        try:
            return await self._summarize()
        except BudgetExhausted as exc:
            await self.events.emit("budget_exhausted", {"reason": str(exc), "usage": to_dict(self.meter.usage)})
            return self.partial_outcome()

    async def _expansion_pass(self, agents: list[tuple[str, str]], saved: dict) -> None:
        """Pass 2: every agent asks its sources again with the expanded query; an agent whose
        second pass is checkpointed is not asked again."""
        expanded = saved.get("expansion") or self._expanded_query()
        if "expansion" not in saved:
            await self.checkpoints.save("expansion", expanded)
            await self.events.emit("round_start", {"round": 2, "query": expanded,
                                                   "subtasks": [a for a, _ in agents]})
        if expanded == self.request.query:
            return
        pending = [(a, t) for a, t in agents if f"pass2:{a}" not in saved]

        async def second(agent_id: str, agent_type: str) -> None:
            lists, _ = await query_sources(self.sources_for(agent_type), expanded, self.request.max_results, agent_id)
            for ranked in lists:
                ranked.pass_number = 2
            self.lists[agent_id] = self.lists.get(agent_id, []) + lists
            await self.checkpoints.save(f"pass2:{agent_id}", [
                {"source": rl.source, "hits": [to_dict(h) for h in rl.hits]} for rl in lists])

        await run_together(second(a, t) for a, t in pending)
        await self.events.emit("round_complete", {"round": 2, "query": expanded,
                                                  "subtasks": [a for a, _ in agents]})

    def _expanded_query(self) -> str:
        top = self._fused()[:EXPANSION_RESULTS]
        words = {}
        for text in (f"{s.title} {s.snippet}" for s in top):
            for word in text.split():
                for stem in tokenize(word):
                    words.setdefault(stem, word.strip(".,;:()[]\"'`").lower())
        asked = set(tokenize(self.request.query))
        extra = [words[t] for t in key_terms([f"{s.title} {s.snippet}" for s in top], 12)
                 if t not in asked and t in words and words[t]][:EXPANSION_TERMS]
        return f"{self.request.query} {' '.join(extra)}".strip()

    async def _run_agent(self, agent_id: str, agent_type: str) -> None:
        request = self.request
        sources = self.sources_for(agent_type)
        started = time.monotonic()
        await self.events.emit("agent_start", {"agent_type": agent_type, "sources": [s.name for s in sources]},
                               agent_id=agent_id)
        lists, errors = await query_sources(sources, request.query, request.max_results, agent_id)
        pages: dict[str, Hit] = {}
        for hit in (h for rl in lists for h in rl.hits):  # a page the source returned in two chunks is one result
            pages.setdefault(normalize_url(hit.url), hit)
        hits = list(pages.values())
        status = "failed" if errors and not lists else "completed"
        content = "\n".join(f"- {h.title} — {h.url}" for h in hits[:10])
        result = AgentResult(
            agent_id, f"search_{agent_type}", agent_type, status, content,
            [Citation(i, h.title, h.url, h.source, h.snippet) for i, h in enumerate(hits, start=1)],
            round(time.monotonic() - started, 3),
            error="; ".join(f"{k}: {v}" for k, v in errors.items()) or None,
        )
        self.agent_results[agent_id] = result
        self.lists[agent_id] = lists
        await self.checkpoints.save(f"agent:{agent_id}", {
            "result": to_dict(result),
            "lists": [{"source": rl.source, "hits": [to_dict(h) for h in rl.hits]} for rl in lists],
        })
        done = len(self.agent_results) / max(1, request.num_agents)
        event = "agent_error" if status == "failed" else "agent_complete"
        await self.events.emit(event, {"agent_type": agent_type, "results": len(hits), "source_errors": errors},
                               agent_id=agent_id, progress=round(5 + 80 * done, 1))

    def _fused(self) -> list[Source]:
        ordered = [rl for agent_id in sorted(self.lists, key=_agent_number) for rl in self.lists[agent_id]]
        return fuse(ordered, self.request.max_results)

    async def _summarize(self) -> Outcome:
        sources = self._fused()
        if self.summary is None:
            await self.events.emit("synthesis_start", {"synthesis_id": "summary", "level": "camina",
                                                       "source_agent_ids": sorted(self.lists, key=_agent_number)})
            try:
                content = await self.provider.summarize(self.request.query, sources, self.meter)
            except UnusableAnswer as exc:
                log.warning("search summary degraded to the result list: %s", exc)
                content = "## Results\n\n" + "\n".join(f"- [{s.id}] {s.title} — {s.snippet}" for s in sources)
            self.summary = SynthesisResult("summary", "camina", content, sorted(self.lists, key=_agent_number))
            await self.checkpoints.save("summary", to_dict(self.summary))
            await self.events.emit("synthesis_complete", {"synthesis_id": "summary", "level": "camina",
                                                          "chars": len(content)}, progress=99.0)
        return self._outcome(sources, self.summary.content, partial=False)

    def partial_outcome(self, error: str | None = None) -> Outcome:
        sources = self._fused() if self.request else []
        body = self.summary.content if self.summary else "## Results so far\n\n" + "\n".join(
            f"- [{s.id}] {s.title} — {s.snippet}" for s in sources)
        outcome = self._outcome(sources, body, partial=True)
        outcome.error = error
        return outcome

    def _outcome(self, sources: list[Source], body: str, partial: bool) -> Outcome:
        title = self.request.title or self.request.query
        passages: dict[str, list[str]] = {}
        for lists in self.lists.values():
            for hit in (h for rl in lists for h in rl.hits):
                texts = passages.setdefault(normalize_url(hit.url), [])
                if passage_text(hit) not in texts:
                    texts.append(passage_text(hit))
        body, citations = verify_citations(body, evidence_for(sources, {u: " ".join(t) for u, t in passages.items()}))
        report = f"# {title}\n\n{body.strip()}\n\n{sources_section(sources)}\n"
        return Outcome(
            subtasks=[],
            agent_results=[self.agent_results[a] for a in sorted(self.agent_results, key=_agent_number)],
            synthesis_results=[self.summary] if self.summary else [],
            final_synthesis=report,
            sources=sources,
            usage=self.meter.usage,
            budget=self.meter.budget,
            partial=partial,
            citations=citations,
        )


def _agent_number(agent_id: str) -> int:
    return int(agent_id.rsplit("_", 1)[-1])

