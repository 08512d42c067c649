"""The research orchestrator: a planner splits the query into subtasks, worker agents
research them in parallel (each a bounded loop of steps: search, read, note, finish), a
reviewer reads each round's findings against the query and turns what is still unanswered
into follow-up subtasks for the next round (up to `depth` rounds), mid-tier synthesizers
merge groups of findings, and a final synthesizer writes the cited Markdown report.

Resumable: the plan, every finished step, every agent, every review and every synthesis is
checkpointed, and a run over existing checkpoints buys none of that work again."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .agent import HITS_PER_SOURCE, STATE_KEY, AgentEvents, PageReader, StepLoop, quoted
from .budget import ScopedMeter, UsageMeter
from .citations import (
    LOCAL_TAG,
    cited_ids,
    evidence_for,
    number_sources,
    passage_text,
    sources_section,
    verify_citations,
)
from .concurrency import run_together
from .errors import BudgetExhausted, Interrupted, OrchestrationError, UnusableAnswer
from .interfaces import CheckpointStore, EventSink, Provider, SearchSource
from .models import AgentResult, Citation, Hit, Outcome, ResearchRequest, Subtask, SynthesisResult, to_dict
from .ranking import fuse_hits, normalize_url
from .retrieval import query_sources
from .text import established, jaccard, tokenize

log = logging.getLogger(__name__)

PLAN_CONTEXT_HITS = 8
PROGRESS_INTERVAL = 0.5
# A hit whose text is shorter than this is a snippet; reading its page gives the agent more.
FULL_TEXT_CHARS = 800

# design: a gap whose words are this close to a subtask already run is a repeat, not a new question.
REPEAT_SIMILARITY = 0.75
# design: a follow-up is told at most this many sentences earlier rounds established about its
# gap (those sharing most words with it): what four agents' findings quote at most, while its
# checkpoint and a chat model's prompt stay small.
KNOWN_SENTENCES = 20

# Share of the progress bar each phase fills.
PLAN_DONE, AGENTS_DONE = 5.0, 85.0


class ResearchOrchestrator:
    def __init__(
        self,
        provider: Provider,
        sources: list[SearchSource],
        events: EventSink,
        checkpoints: CheckpointStore,
        meter: UsageMeter,
        max_parallel_agents: int = 20,
        read_page: PageReader | None = None,
        pages_per_agent: int = 0,
    ):
        self.provider = provider
        self.sources = [s for s in sources if s.enabled]
        self.events = events
        self.checkpoints = checkpoints
        self.meter = meter
        self.max_parallel_agents = max_parallel_agents
        self.read_page = read_page
        self.pages_per_agent = pages_per_agent if read_page else 0
        self.request: ResearchRequest | None = None
        self.subtasks: list[Subtask] = []
        self.agent_results: dict[str, AgentResult] = {}
        self.syntheses: dict[str, SynthesisResult] = {}
        self.evidence: dict[str, str] = {}  # normalized URL -> passage text, for citation verification
        self._budget_announced = False
        self.saved: dict[str, Any] = {}

    # -- the run -------------------------------------------------------------------

    async def run(self, request: ResearchRequest) -> Outcome:
        self.request = request
        saved = await self.checkpoints.load()
        self.saved = saved
        if not saved:
            await self.events.emit("workflow_start", {"orchestrator": "research", "query": request.query,
                                                      "num_agents": request.num_agents, "depth": request.depth,
                                                      "max_steps": request.max_steps,
                                                      "max_agents_total": self.max_agents_total},
                                   progress=0.0)
        try:
            await self._plan(saved)
            for number in range(1, request.depth + 1):
                if number > 1 and not await self._follow_ups(number, saved):
                    break
                await self._run_round(number, saved)
                if self.meter.budget.exhausted:
                    break
            self._fail_if_no_agent_succeeded()
            final = await self._synthesize(saved)
        except BudgetExhausted as exc:
            await self._announce_budget(str(exc))
            return self.partial_outcome()
        if self.meter.budget.exhausted:
            return self.partial_outcome()
        return self._outcome(final, partial=False)

    @property
    def max_agents_total(self) -> int:
        request = self.request
        return request.max_agents_total or request.num_agents * request.depth

    async def _plan(self, saved: dict[str, Any]) -> None:
        request = self.request
        if "plan" in saved:
            self.subtasks = [Subtask(**s) for s in saved["plan"]]
            for number in range(2, request.depth + 1):
                self.subtasks += [Subtask(**s) for s in saved.get(f"round:{number}", [])]
            self.agent_results = {
                key.split(":", 1)[1]: AgentResult.from_dict(value)
                for key, value in saved.items()
                if key.startswith("agent:")
            }
            self.syntheses = {
                key.split(":", 1)[1]: SynthesisResult.from_dict(value)
                for key, value in saved.items()
                if key.startswith("synthesis:")
            }
            for key, value in saved.items():
                if key.startswith("evidence:"):
                    self._add_evidence(value)
            return
        count = min(request.num_agents, self.max_agents_total)
        await self.events.emit("decomposition_start", {"query": request.query, "num_subtasks": count},
                               progress=1.0)
        lists, _ = await query_sources(self.sources, request.query, HITS_PER_SOURCE, "planner")
        context = fuse_hits(lists, PLAN_CONTEXT_HITS)
        self.subtasks = await self.provider.plan(request.query, count, context, self.meter)
        await self.checkpoints.save("plan", [to_dict(s) for s in self.subtasks])
        await self.events.emit("decomposition_complete", {"subtasks": [to_dict(s) for s in self.subtasks]},
                               progress=PLAN_DONE)
        await self._announce_round(1)

    async def _announce_round(self, number: int) -> None:
        await self.events.emit("round_start", {"round": number, "subtasks": [
            {"subtask_id": s.subtask_id, "title": s.title, "parent": s.parent} for s in self._round(number)]})

    def _round(self, number: int) -> list[Subtask]:
        return [s for s in self.subtasks if s.round == number]

    async def _run_round(self, number: int, saved: dict[str, Any]) -> None:
        pending = [s for s in self._round(number) if self._agent_id(s) not in self.agent_results]
        gate = asyncio.Semaphore(self.max_parallel_agents)

        async def guarded(subtask: Subtask) -> None:
            async with gate:
                await self._run_agent(subtask)

        await run_together(guarded(s) for s in pending)
        if f"round_complete:{number}" not in saved and not self.meter.budget.exhausted:
            await self.checkpoints.save(f"round_complete:{number}", True)
            await self.events.emit("round_complete", {"round": number, "subtasks": [
                {"subtask_id": s.subtask_id, "status": self.agent_results[self._agent_id(s)].status}
                for s in self._round(number) if self._agent_id(s) in self.agent_results]})

    async def _follow_ups(self, number: int, saved: dict[str, Any]) -> bool:
        """Round `number`'s subtasks from the review of the round before: one per gap the
        reviewer named, never a repeat of a subtask already run, never past
        `max_agents_total`. False when there is nothing left to follow up."""
        if f"round:{number}" in saved:
            return bool(self._round(number))
        room = min(self.request.num_agents, self.max_agents_total - len(self.subtasks))
        if room <= 0:
            return False
        key = f"review:{number - 1}"
        if key in saved:
            gaps = list(saved[key])
        else:
            done = [r for r in self._completed_results() if r.round == number - 1]
            labels = {s.subtask_id: self._label(s) for s in self.subtasks}
            findings = [(labels.get(r.subtask_id, r.subtask_id), r.content) for r in done]
            # design: the reviewer names up to num_agents gaps; repeats are dropped below, then the cap applies
            gaps = (await self.provider.review(self.request.query, findings, self.request.num_agents, self.meter)
                    if findings else [])
            await self.checkpoints.save(key, gaps)
            await self.events.emit("review_complete", {"round": number - 1, "gaps": gaps})
        follow_ups: list[Subtask] = []
        # design: a subtask is what it searched for; a gap naming the same words is a repeat.
        # A gap narrower than a subtask's query (its words a strict subset) is not: the broader
        # search ranked other words first, and the focused one asks what it left unanswered.
        asked = [set(tokenize(s.query)) for s in self.subtasks]
        earlier = [r.content for r in self._completed_results() if r.round < number]
        for gap in gaps:
            gap = " ".join(str(gap).split())[:300]
            words = set(tokenize(gap))
            if not words or any(jaccard(words, other) >= REPEAT_SIMILARITY and not words < other for other in asked):
                continue
            asked.append(words)
            follow_ups.append(Subtask(f"subtask_{len(self.subtasks) + len(follow_ups) + 1}", gap[:200], gap,
                                      f"Follow-up of round {number - 1}: {gap}", round=number, parent=gap,
                                      known=established(earlier, gap, KNOWN_SENTENCES)))
            if len(follow_ups) == room:
                break
        self.subtasks += follow_ups
        await self.checkpoints.save(f"round:{number}", [to_dict(s) for s in follow_ups])
        if follow_ups:
            await self._announce_round(number)
        return bool(follow_ups)

    async def _read_pages(self, subtask: Subtask, passages: list[Hit]) -> list[Hit]:
        """The agent reads its best `pages_per_agent` web results in full, side by side, and
        quotes the part of each page that bears on its subtask instead of the snippet. A page
        that cannot be had (refused, failing, not text) leaves its snippet as it was; a page
        the agent already read in one of its steps is not read again."""
        chosen = [i for i, hit in enumerate(passages)
                  if hit.url.startswith(("http://", "https://")) and len(hit.text) < FULL_TEXT_CHARS
                  and not hit.metadata.get("page_read")]
        chosen = chosen[:self.pages_per_agent]
        if not chosen:
            return passages
        read = list(passages)

        async def one(i: int) -> None:
            hit = passages[i]
            try:
                text = await self.read_page(hit.url)
            except Exception as exc:  # noqa: BLE001 - the snippet still stands
                log.info("page %s not read: %s", hit.url, exc)
                return
            better = quoted(hit, text, subtask)
            if better is not None:
                read[i] = better

        await asyncio.gather(*(one(i) for i in chosen))
        return read

    async def _run_agent(self, subtask: Subtask) -> None:
        if self.meter.budget.exhausted:
            return
        agent_id = self._agent_id(subtask)
        started = time.monotonic()
        saved_state = self.saved.get(STATE_KEY.format(agent_id))
        events = AgentEvents(self.events)
        try:
            await self._agent(subtask, agent_id, started, saved_state, events)
        finally:
            events.abandon()

    async def _agent(self, subtask: Subtask, agent_id: str, started: float, saved_state: dict[str, Any] | None,
                     events: AgentEvents) -> None:
        if saved_state is None:
            await events.emit_soon("agent_start", {"subtask_id": subtask.subtask_id, "title": subtask.title,
                                                   "query": subtask.query, "round": subtask.round,
                                                   "parent": subtask.parent}, agent_id=agent_id)
        meter = ScopedMeter(self.meter)
        loop = StepLoop(self.provider, self.sources, events, self.checkpoints, self.read_page,
                        self.request.max_steps)

        last_progress, deltas = [0.0], [0]

        async def progress(text: str) -> None:
            # design: a streaming model calls this per delta (a token or a few); the event log
            # gets a few a second, each carrying the whole answer so far.
            deltas[0] += 1
            now = time.monotonic()
            if now - last_progress[0] >= PROGRESS_INTERVAL:
                last_progress[0] = now
                await events.emit_soon("agent_progress", {"subtask_id": subtask.subtask_id, "text": text,
                                                          "tokens": deltas[0], "chars": len(text)},
                                       agent_id=agent_id)

        source_errors: dict[str, str] = {}
        try:
            steps = await loop.run(subtask, agent_id, saved_state, meter, progress)
            source_errors = steps.state.source_errors
            passages = steps.state.passages
            if self.pages_per_agent:
                passages = await self._read_pages(subtask, passages)
            if steps.answer and not deltas[0]:
                await progress(steps.answer)  # an answer that came whole (a finish tool's) is reported too
            content = steps.answer or " ".join(steps.state.notes) or await self.provider.write_finding(
                subtask, passages, meter, progress)
        except BudgetExhausted as exc:
            await self._announce_budget(str(exc))
            return
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit, Interrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - one agent failing must not fail the task
            result = AgentResult(agent_id, subtask.subtask_id, "research", "failed", "",
                                 execution_time=round(time.monotonic() - started, 3), usage=meter.usage,
                                 error=str(exc), round=subtask.round)
            self.agent_results[agent_id] = result
            await events.emit("agent_error", {"subtask_id": subtask.subtask_id, "error": str(exc),
                                              "source_errors": source_errors}, agent_id=agent_id,
                              progress=self._agent_progress())
            return
        finish = await loop.announce_finish(subtask, agent_id, steps.state)
        refs = {int(n) for n in LOCAL_TAG.findall(content)}
        citations = [
            Citation(ref=i, title=h.title, url=h.url, source=h.source, snippet=h.snippet)
            for i, h in enumerate(passages, start=1)
            if i in refs
        ]
        result = AgentResult(agent_id, subtask.subtask_id, "research", "completed", content, citations,
                             round(time.monotonic() - started, 3), meter.usage, round=subtask.round,
                             steps=[*steps.state.steps, finish])
        evidence: dict[str, str] = {}
        for i, hit in enumerate(passages, start=1):
            if i in refs:  # two chunks of one page are two passages; their URL's evidence holds both
                url = normalize_url(hit.url)
                evidence[url] = f"{evidence[url]}\n{passage_text(hit)}" if url in evidence else passage_text(hit)
        self._add_evidence(evidence)
        # design: saved before (or with) the agent's result, so a resumed task that keeps the
        # agent has its passages too: both are queued in this order on one writer, which writes
        # them in one transaction (mcp.runtime.BatchWriter), instead of one store turn after
        # the other for each of twenty agents finishing together.
        self.agent_results[agent_id] = result
        await asyncio.gather(self.checkpoints.save(f"evidence:{agent_id}", evidence),
                             self.checkpoints.save(f"agent:{agent_id}", to_dict(result)))
        await events.emit("agent_complete", {"subtask_id": subtask.subtask_id, "title": subtask.title,
                                             "round": subtask.round, "steps": len(result.steps),
                                             "citations": len(citations), "chars": len(content),
                                             "execution_time": result.execution_time,
                                             "source_errors": source_errors},
                          agent_id=agent_id, progress=self._agent_progress())

    def _add_evidence(self, evidence: dict[str, str]) -> None:
        """design: two agents may quote different parts of one page (a long section is
        several chunks under one URL); a citation is checked against all of them, not only
        against whichever agent finished last."""
        for url, text in evidence.items():
            held = self.evidence.get(url)
            if not held or held in text:
                self.evidence[url] = text
            elif text not in held:
                self.evidence[url] = f"{held}\n{text}"

    def _fail_if_no_agent_succeeded(self) -> None:
        """Every agent failing (a bad key, a provider down) fails the task with the first error."""
        results = list(self.agent_results.values())
        if results and not self.meter.budget.exhausted and all(r.status == "failed" for r in results):
            raise OrchestrationError(f"every worker agent failed: {results[0].error}")

    async def _synthesize(self, saved: dict[str, Any]) -> str:
        request = self.request
        done = self._completed_results()
        _, rewritten = number_sources(done)
        labels = {s.subtask_id: self._label(s) for s in self.subtasks}
        parts = [(labels.get(r.subtask_id, r.subtask_id), rewritten[r.agent_id]) for r in done]
        ids = [r.agent_id for r in done]
        if request.enable_drummer and len(done) > 1:
            size = request.drummer_group_size
            groups = [(parts[i:i + size], ids[i:i + size]) for i in range(0, len(parts), size)]
            # design: the mid-tier synthesizers are independent, so they run side by side and
            # the level costs one synthesis call of wall time, not one per group.
            syntheses = await run_together(
                self._synthesis(f"drummer_{n}", "drummer", group_parts, group_ids, AGENTS_DONE + 10.0)
                for n, (group_parts, group_ids) in enumerate(groups, start=1))
            parts = [(f"Synthesis {n}: " + ", ".join(label for label, _ in group_parts), synthesis.content)
                     for n, ((group_parts, _), synthesis) in enumerate(zip(groups, syntheses), start=1)]
        if request.enable_camina and parts:
            return (await self._synthesis("camina", "camina", parts, ids, 99.0)).content
        return "\n\n".join(f"### {label}\n\n{text}" for label, text in parts)

    async def _synthesis(self, synthesis_id: str, level: str, parts: list[tuple[str, str]],
                         agent_ids: list[str], progress: float) -> SynthesisResult:
        if synthesis_id in self.syntheses:
            return self.syntheses[synthesis_id]
        await self.events.emit("synthesis_start", {"synthesis_id": synthesis_id, "level": level,
                                                   "source_agent_ids": agent_ids})
        try:
            content = await self.provider.synthesize(self.request.query, level, parts, self.meter)
        except UnusableAnswer as exc:
            # design: the findings stand without their merge; a model answering garbage once
            # costs the report its polish, not its content.
            log.warning("synthesis %s degraded to the findings as written: %s", synthesis_id, exc)
            content = "\n\n".join(f"### {label}\n\n{text}" for label, text in parts)
        synthesis = SynthesisResult(synthesis_id, level, content, agent_ids)
        self.syntheses[synthesis_id] = synthesis
        await self.checkpoints.save(f"synthesis:{synthesis_id}", to_dict(synthesis))
        await self.events.emit("synthesis_complete", {"synthesis_id": synthesis_id, "level": level,
                                                      "chars": len(content)}, progress=progress)
        return synthesis

    # -- results ---------------------------------------------------------------------

    def partial_outcome(self, error: str | None = None) -> Outcome:
        """What exists so far, assembled without another provider call: used after cancel,
        timeout or an exhausted budget."""
        done = self._completed_results()
        _, rewritten = number_sources(done)
        labels = {s.subtask_id: self._label(s) for s in self.subtasks}
        body = "\n\n".join(f"### {labels.get(r.subtask_id, r.subtask_id)}\n\n{rewritten[r.agent_id]}" for r in done)
        if not body:
            body = "_No worker agent finished before the task stopped._"
        final = self.syntheses.get("camina")
        text = final.content if final else "## Findings so far\n\n" + body
        outcome = self._outcome(text, partial=True)
        outcome.error = error
        return outcome

    def _outcome(self, body: str, partial: bool) -> Outcome:
        request = self.request
        done = self._completed_results()
        sources, _ = number_sources(done)
        title = request.title or request.query
        body, citations = verify_citations(body, evidence_for(sources, self.evidence))
        body = body.strip() + self._rounds_section(done, sources)
        cited = cited_ids(body)
        report = f"# {title}\n\n{body}\n\n{sources_section(sources, cited)}\n"
        ordered = [self.agent_results[self._agent_id(s)] for s in self.subtasks
                   if self._agent_id(s) in self.agent_results]
        return Outcome(
            subtasks=list(self.subtasks),
            agent_results=ordered,
            synthesis_results=list(self.syntheses.values()),
            final_synthesis=report,
            sources=sources,
            usage=self.meter.usage,
            budget=self.meter.budget,
            partial=partial,
            citations=citations,
        )

    def _rounds_section(self, done: list[AgentResult], sources: list) -> str:
        """Which findings came from follow-up rounds, whatever the synthesizer wrote: each
        follow-up subtask, the gap it chased and the sources its agent cited."""
        follow_ups = [s for s in self.subtasks if s.round > 1]
        if not follow_ups:
            return ""
        finished = {r.agent_id for r in done}
        lines = ["", "", "## Research rounds", "",
                 f"Round 1 researched {len(self._round(1))} subtasks from the plan; a review of each round's "
                 "findings named what was still unanswered, and these follow-ups chased it:", ""]
        for subtask in follow_ups:
            agent_id = self._agent_id(subtask)
            tags = "".join(f"[{s.id}]" for s in sources if any(f.agent_id == agent_id for f in s.found_by))
            state = tags if agent_id in finished else "(did not finish)"
            lines.append(f"- Follow-up (round {subtask.round}): {subtask.title} {state}".rstrip())
        return "\n".join(lines)

    def _completed_results(self) -> list[AgentResult]:
        return [self.agent_results[self._agent_id(s)] for s in self.subtasks
                if self.agent_results.get(self._agent_id(s)) and
                self.agent_results[self._agent_id(s)].status == "completed"]

    @staticmethod
    def _label(subtask: Subtask) -> str:
        """A finding's heading; the report says which findings came from follow-up rounds."""
        if subtask.round > 1:
            return f"Follow-up (round {subtask.round}): {subtask.title}"
        return subtask.title

    def _agent_progress(self) -> float:
        total = max(1, len(self.subtasks), min(self.max_agents_total, self.request.num_agents * self.request.depth))
        return round(PLAN_DONE + (AGENTS_DONE - PLAN_DONE) * len(self.agent_results) / total, 1)

    async def _announce_budget(self, reason: str) -> None:
        if not self._budget_announced:
            self._budget_announced = True
            await self.events.emit("budget_exhausted", {"reason": reason, "usage": to_dict(self.meter.usage)})

    @staticmethod
    def _agent_id(subtask: Subtask) -> str:
        return f"agent_{subtask.subtask_id.rsplit('_', 1)[-1]}"

