"""Research quality on a public corpus nobody on this project wrote: the Python 3.11 library
reference as Debian's `python3.11-doc` installs it (bench/run.sh installs the package when
it is missing). Each question of bench/quality_questions.json (dev: odd ids, held-out: even
ids) and bench/quality_questions_fresh.json (fresh: a second held-out set, written before the
follow-up change and never read while changing the code) lists the facts a correct answer
must contain, each as a few acceptable phrasings; `--check` verifies that the reference
states every phrasing.

For every question and every configuration (depth 1 or 2 × max_steps 1 or 4) the embedded
default (the offline `extractive` provider, local documents) researches it in process, and
we record: answered (every fact in the report body), verified (every fact also in the
passage of a source the body cites), facts in any passage the searches returned
(retrieval, as opposed to what the report kept), wall time, model calls and searches.

    venv/bin/python bench/quality.py [--questions N] [--agents N] [--half dev|held-out|fresh]
        [--config DEPTH,STEPS ...] [--diagnose] [--check]   (or bench/run.sh --only quality)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestration.budget import UsageMeter  # noqa: E402
from orchestration.interfaces import SearchSource  # noqa: E402
from orchestration.citations import GLOBAL_TAG  # noqa: E402
from orchestration.models import Budget, ResearchRequest  # noqa: E402
from orchestration.pricing import PriceTable  # noqa: E402
from orchestration.providers.extractive import ExtractiveProvider  # noqa: E402
from orchestration.ranking import normalize_url  # noqa: E402
from orchestration.research import ResearchOrchestrator  # noqa: E402
from orchestration.sources.local import LocalDocsSource, chunk_file  # noqa: E402

CORPUS = Path("/usr/share/doc/python3.11/html/library")
QUESTIONS = ROOT / "bench" / "quality_questions.json"
FRESH = ROOT / "bench" / "quality_questions_fresh.json"
SETS = ("dev", "held-out", "fresh")
CONFIGS = [(1, 1), (1, 4), (2, 1), (2, 4)]  # (depth, max_steps)


def fold(text: str) -> str:
    """Lower case, whitespace folded, no space before punctuation (HTML leaves some)."""
    text = re.sub(r"\s+", " ", text.lower())
    return re.sub(r"\s+([,.;:)\]])", r"\1", re.sub(r"([(\[])\s+", r"\1", text))


class Events:
    def __init__(self) -> None:
        self.searches = 0

    async def emit(self, event_type: str, data: dict[str, Any] | None = None, agent_id: str | None = None,
                   progress: float | None = None) -> None:
        if event_type == "agent_step" and (data or {}).get("action") == "search":
            self.searches += 1


class Checkpoints:
    async def load(self) -> dict[str, Any]:
        return {}

    async def save(self, key: str, value: Any) -> None:
        pass


class Recorded(SearchSource):
    """The corpus source, keeping every passage it returned during one research."""

    def __init__(self, source: SearchSource) -> None:
        self.source, self.name, self.texts = source, source.name, []

    async def search(self, query: str, limit: int = 10) -> list:
        hits = await self.source.search(query, limit)
        self.texts += [h.text or h.snippet for h in hits]
        return hits

    def retrieved(self) -> str:
        return fold(" ".join(self.texts))


def judge(report: str, sources: list, evidence: dict[str, str], facts: list[list[str]]) -> tuple[int, int]:
    """(facts in the report body, facts also in the passage of a source the body cites)."""
    body = report.split("\n## Sources", 1)[0]
    folded = fold(GLOBAL_TAG.sub(" ", body))
    cited = {f"S{n}" for n in GLOBAL_TAG.findall(body)}
    passages = [fold(evidence.get(normalize_url(s.url), "")) for s in sources if s.id in cited]
    present = verified = 0
    for phrasings in facts:
        options = [fold(p) for p in phrasings]
        if any(p in folded for p in options):
            present += 1
            if any(p in passage for p in options for passage in passages):
                verified += 1
    return present, verified


class Writer(ExtractiveProvider):
    """The embedded default, keeping the passages each agent wrote its finding from."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[str] = []
        self.cpu = 0.0  # CPU seconds of the whole research (every thread of this process)

    async def write_finding(self, subtask, passages, meter, on_progress=None):
        self.held += [h.text or h.snippet for h in passages]
        return await super().write_finding(subtask, passages, meter, on_progress)


async def research(source: LocalDocsSource, question: str, depth: int, max_steps: int, agents: int):
    events, recorded, writer = Events(), Recorded(source), Writer()
    orchestrator = ResearchOrchestrator(writer, [recorded], events, Checkpoints(),
                                        UsageMeter(Budget(), PriceTable()))
    started, cpu = time.perf_counter(), time.process_time()
    outcome = await orchestrator.run(ResearchRequest(question, num_agents=agents, depth=depth, max_steps=max_steps))
    seconds = time.perf_counter() - started
    writer.cpu = time.process_time() - cpu
    stages = {"retrieved": recorded.retrieved(), "agent passages": fold(" ".join(writer.held)),
              "finding": fold(" ".join(r.content for r in outcome.agent_results if r.status == "completed")),
              "mid-tier": fold(" ".join(s.content for s in outcome.synthesis_results if s.level == "drummer")),
              "report": fold(GLOBAL_TAG.sub(" ", outcome.final_synthesis.split("\n## Sources", 1)[0]))}
    return outcome, orchestrator.evidence, (seconds, writer.cpu), events.searches, stages


STAGES = ("retrieved", "agent passages", "finding", "mid-tier", "report")


def lost_at(stages: dict[str, str], phrasings: list[str]) -> str | None:
    """The first stage a fact is missing from (None: it reached the report body). A fact
    the mid-tier never saw because mid-tier synthesis is off counts at the next stage."""
    options = [fold(p) for p in phrasings]
    for stage in STAGES:
        if stage == "mid-tier" and not stages[stage]:
            continue
        if not any(p in stages[stage] for p in options):
            return stage
    return None


def half(question: dict[str, Any]) -> str:
    """dev (odd ids), held-out (even ids) or fresh (the second file): tune on dev, report all."""
    if question.get("set"):
        return question["set"]
    return "dev" if int(re.sub(r"\D", "", question["id"]) or 0) % 2 else "held-out"


def load_questions(limit: int | None = None) -> list[dict[str, Any]]:
    """The first N of the dev and held-out questions, then the fresh ones (tagged set=fresh)."""
    questions = json.loads(QUESTIONS.read_text())["questions"][:limit]
    fresh = json.loads(FRESH.read_text())["questions"][:limit]
    return questions + [dict(q, set="fresh") for q in fresh]


def check(questions: list[dict[str, Any]]) -> list[str]:
    """Every phrasing that no page of the corpus states (as the local source reads the page,
    folded): an empty list means every fact is a phrase of the reference."""
    pages = [fold(" ".join(row[2] for row in chunk_file(path, path.name, "", path.read_text(errors="replace"))))
             for path in sorted(CORPUS.glob("*.html"))]
    return [f"{q['id']}: {phrasing!r}" for q in questions for phrasings in q["facts"] for phrasing in phrasings
            if not any(fold(phrasing) in page for page in pages)]


def run(index_dir: Path, limit: int | None = None, agents: int = 4, only: str | None = None,
        configs: list[tuple[int, int]] | None = None, diagnose: bool = False) -> dict[str, Any]:
    if not CORPUS.is_dir():
        raise SystemExit(f"{CORPUS} is missing: install Debian's python3.11-doc (bench/run.sh does)")
    questions = load_questions(limit)
    if only:
        questions = [q for q in questions if half(q) == only]
    source = LocalDocsSource(CORPUS, index_dir / "quality-index.db", refresh_interval=3600)
    indexed = time.perf_counter()
    asyncio.run(source.search("warm up the index", 1))
    index_seconds = time.perf_counter() - indexed
    rows: dict[str, Any] = {}
    per_question: dict[str, dict[str, Any]] = {}
    losses: dict[str, dict[str, int]] = {}
    for depth, steps in configs or CONFIGS:
        name = f"depth {depth}, max_steps {steps}"
        answered = facts_total = facts_present = facts_verified = fully_verified = facts_held = 0
        wall = cpu = calls = searches = cited = 0.0
        by_half = {name: [0, 0] for name in SETS}
        lost = losses.setdefault(name, dict.fromkeys(STAGES, 0))
        for q in questions:
            outcome, evidence, (seconds, used), made, stages = asyncio.run(research(source, q["question"], depth, steps, agents))
            facts_held += sum(any(fold(p) in stages["retrieved"] for p in phrasings) for phrasings in q["facts"])
            present, verified = judge(outcome.final_synthesis, outcome.sources, evidence, q["facts"])
            n = len(q["facts"])
            answered += present == n
            fully_verified += verified == n
            by_half[half(q)][0] += present == n
            by_half[half(q)][1] += 1
            facts_total, facts_present, facts_verified = facts_total + n, facts_present + present, facts_verified + verified
            wall, cpu, calls, searches = wall + seconds, cpu + used, calls + outcome.usage.llm_calls, searches + made
            cited += len(GLOBAL_TAG.findall(outcome.final_synthesis.split("\n## Sources", 1)[0]))
            per_question.setdefault(q["id"], {})[name] = f"{present}/{n} facts, {verified} verified"
            for phrasings in q["facts"]:
                stage = lost_at(stages, phrasings)
                if stage is not None:
                    lost[stage] += 1
                    if diagnose:
                        print(f"{name} | {q['id']} ({half(q)}) | {phrasings[0]!r} lost at: {stage}", file=sys.stderr)
        count = len(questions)
        rows[name] = {
            "answered": answered, "answered_and_verified": fully_verified, "questions": count,
            "answered_dev": by_half["dev"][0], "questions_dev": by_half["dev"][1],
            "answered_held_out": by_half["held-out"][0], "questions_held_out": by_half["held-out"][1],
            "answered_fresh": by_half["fresh"][0], "questions_fresh": by_half["fresh"][1],
            "facts_retrieved": facts_held, "facts_present": facts_present, "facts_verified": facts_verified,
            "facts": facts_total,
            "verified_share": round(facts_verified / facts_present, 3) if facts_present else None,
            "mean_wall_s": round(wall / count, 3), "mean_cpu_s": round(cpu / count, 3),
            "mean_model_calls": round(calls / count, 1),
            "mean_searches": round(searches / count, 1), "mean_citations": round(cited / count, 1),
            "facts_lost_at": lost,
        }
    return {"quality": {"corpus": str(CORPUS), "agents": agents, "index_seconds": round(index_seconds, 1),
                        "configs": rows, "per_question": per_question}}


def table(result: dict[str, Any]) -> str:
    rows = result["quality"]["configs"]
    lines = ["| configuration | answered | dev (odd ids) | held-out (even ids) | fresh | answered, every fact verified "
             "| facts in passages retrieved | facts in report | facts verified | mean wall | mean CPU | model calls | searches |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['answered']}/{r['questions']} | {r['answered_dev']}/{r['questions_dev']} "
                     f"| {r['answered_held_out']}/{r['questions_held_out']} | {r['answered_fresh']}/{r['questions_fresh']} "
                     f"| {r['answered_and_verified']}/{r['questions']} "
                     f"| {r['facts_retrieved']}/{r['facts']} | {r['facts_present']}/{r['facts']} | {r['facts_verified']}/{r['facts_present']} "
                     f"| {r['mean_wall_s']:.2f} s | {r['mean_cpu_s']:.2f} s | {r['mean_model_calls']} | {r['mean_searches']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=None, help="only the first N questions")
    parser.add_argument("--agents", type=int, default=4, help="num_agents of each research (default 4)")
    parser.add_argument("--half", choices=SETS,
                        help="only the dev (odd ids), held-out (even ids) or fresh (bench/quality_questions_fresh.json) questions")
    parser.add_argument("--config", action="append", metavar="DEPTH,STEPS",
                        help="only this configuration (repeatable), e.g. 2,4")
    parser.add_argument("--diagnose", action="store_true",
                        help="print, for every fact a report lacks, the stage where it was lost "
                             "(passages any search returned, passages an agent wrote from, agent findings, mid-tier syntheses, report body)")
    parser.add_argument("--check", action="store_true",
                        help="only check that the reference states every phrasing of every fact (runs no research)")
    args = parser.parse_args()
    if args.check:
        if not CORPUS.is_dir():
            raise SystemExit(f"{CORPUS} is missing: install Debian's python3.11-doc (bench/run.sh does)")
        questions = [q for q in load_questions(args.questions) if not args.half or half(q) == args.half]
        missing = check(questions)
        print("\n".join(missing) or f"every phrasing of {len(questions)} questions is in the reference")
        return 1 if missing else 0
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    configs = [tuple(int(n) for n in c.split(",")) for c in args.config] if args.config else None
    result = run(out, args.questions, args.agents, args.half, configs, args.diagnose)
    (out / "quality.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
