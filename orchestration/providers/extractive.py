"""The offline `extractive` provider: no model and no network, deterministic, but real work.

The planner splits the query into its facets and adds the headings of the most related
documents; worker agents rank the sentences of their passages against their subtask with
BM25 and keep the best, diverse ones with their citations; synthesizers rank the cited
sentences of their inputs against the question and compose Markdown from them."""

from __future__ import annotations

import re

from ..interfaces import Action, AgentView, Meter, ProgressCallback, Provider
from ..models import Hit, Source, Subtask
from ..text import BM25, CITATION_RE, claims, is_known, is_prose, jaccard, key_terms, split_sentences, tokenize

MODEL = "extractive"
FACET_SPLIT = re.compile(r"\s*(?:[,;]|\band\b|\bor\b|\bvs\.?|\bversus\b|\?)\s*", re.IGNORECASE)
QUESTION_WORDS = re.compile(r"^(?:how|what|why|when|where|which|who|does|do|is|are|can|should)\b\s*",
                            re.IGNORECASE)
ASPECTS = (
    ("Overview of {t}", "{t} overview definition purpose"),
    ("How {t} works", "{t} how it works architecture design"),
    ("Configuring {t}", "{t} configuration setup settings environment"),
    ("Operating and monitoring {t}", "{t} operations monitoring health logs metrics"),
    ("Failure modes of {t}", "{t} failure errors troubleshooting recovery"),
    ("Security of {t}", "{t} security authentication keys limits"),
    ("Performance and limits of {t}", "{t} performance limits scaling throughput"),
    ("Alternatives and trade-offs for {t}", "{t} alternatives trade-offs comparison"),
    ("Best practices for {t}", "{t} best practices recommendations"),
    ("Deploying {t}", "{t} deployment release rollback systemd"),
    ("Data and state in {t}", "{t} data state store persistence"),
    ("Interfaces of {t}", "{t} interface API routes protocol"),
    ("Examples of {t}", "{t} example usage curl"),
    ("Testing {t}", "{t} testing tests verification"),
    ("Scaling out {t}", "{t} scaling redis hosts workers"),
    ("Costs and budgets of {t}", "{t} cost budget tokens usage"),
    ("Background of {t}", "{t} background history names glossary"),
    ("Open questions about {t}", "{t} open questions gaps limitations"),
    ("Clients of {t}", "{t} clients claude code mcp"),
    ("Events and progress of {t}", "{t} events progress streaming"),
)
MAX_FINDING_SENTENCES = 5
# design: a query term an earlier pick already covers counts this much toward the next pick,
# so a finding spends its sentences on the parts of its subtask still unanswered.
COVERED_WEIGHT = 0.25
CONTEXT_WEIGHT = 0.5
# A "sentence" this long is usually several run together (an HTML definition list loses the
# full stops between a term and its description); it is cut at its inner full stops.
RUN_ON_SPLIT = re.compile(r"(?<=[.;])\s+(?=\S)")
# Pseudo-relevance feedback: the best passages that lend their salient terms to the next query.
FEEDBACK_PASSAGES, FEEDBACK_TERMS = 3, 3
MIN_SENTENCE_CHARS, MAX_SENTENCE_CHARS = 25, 420


def _surface_words(text: str) -> dict[str, str]:
    """Stem -> the first word of `text` with that stem, in order: a query sent to a source
    reads as words, not stems."""
    out: dict[str, str] = {}
    for word in re.findall(r"[^\W_]+(?:[-.][^\W_]+)*", text):
        for stem in tokenize(word):
            out.setdefault(stem, word.lower())
    return out


def _strip_question_words(text: str) -> str:
    """`how are webhooks signed` -> `webhooks signed`."""
    while (shorter := QUESTION_WORDS.sub("", text).strip()) != text:
        text = shorter
    return text


def _account(meter: Meter) -> None:
    meter.record(meter.reserve(MODEL, 0, 0), MODEL, 0, 0)


def _cite(sentence: str, tag: str) -> str:
    """Insert a citation tag before the sentence's final punctuation."""
    sentence = sentence.strip()
    if CITATION_RE.search(sentence[-8:]):
        return sentence
    if sentence and sentence[-1] in ".!?:":
        return f"{sentence[:-1]} {tag}{sentence[-1]}"
    return f"{sentence} {tag}."


def _pick(candidates: list[tuple[float, str, list[str], int]], limit: int, per_group: int,
          seen: list[list[str]] | None = None) -> list[tuple[float, str, list[str], int]]:
    """Greedy diverse selection: best first, no near-duplicates, at most `per_group` per group."""
    chosen: list[tuple[float, str, list[str], int]] = []
    seen = seen if seen is not None else []
    groups: dict[int, int] = {}
    for item in sorted(candidates, key=lambda c: (-c[0], c[3], c[1])):
        score, _, tokens, group = item
        if score <= 0 or len(chosen) >= limit or groups.get(group, 0) >= per_group:
            continue
        if any(jaccard(tokens, other) > 0.6 for other in seen):
            continue
        chosen.append(item)
        seen.append(tokens)
        groups[group] = groups.get(group, 0) + 1
    return chosen


def _finding_units(text: str) -> list[tuple[str, bool]]:
    """The sentences of a passage, each with whether it may be quoted. An overlong one is cut
    at its inner full stops and semicolons; a piece after such a cut may start with the
    lower-case term a list defined (a piece at the start of a passage may not: that is a
    sentence the chunking cut in two)."""
    out: list[tuple[str, bool]] = []
    for sentence in split_sentences(text):
        pieces = [sentence] if len(sentence) <= MAX_SENTENCE_CHARS else RUN_ON_SPLIT.split(sentence)
        for n, piece in enumerate(p for p in pieces if p):
            out.append((piece, _quotable(piece, after_cut=n > 0)))
    return out


def _quotable(sentence: str, after_cut: bool) -> bool:
    if not MIN_SENTENCE_CHARS <= len(sentence) <= MAX_SENTENCE_CHARS:
        return False
    if after_cut and sentence[0].islower():
        sentence = sentence[0].upper() + sentence[1:]
    return is_prose(sentence)


def _pick_covering(units: list[tuple[int, str]], tokens: list[list[str]], parts: list[dict[str, float]],
                   priors: list[float], limit: int, per_group: int) -> list[tuple[float, str, list[str], int]]:
    """Greedy selection by coverage: each pick is the sentence scoring best on the query
    terms the sentences picked before it do not contain yet (a covered term counts
    COVERED_WEIGHT), so a two-part subtask gets a sentence for each part instead of five
    sentences on its most frequent words. No near-duplicates, at most `per_group` per passage."""
    chosen: list[tuple[float, str, list[str], int]] = []
    covered: set[str] = set()
    groups: dict[int, int] = {}
    left = set(range(len(units)))
    while left and len(chosen) < limit:
        def gain(i: int) -> float:
            return priors[i] * sum(v * (COVERED_WEIGHT if t in covered else 1.0) for t, v in parts[i].items())

        best = max(left, key=lambda i: (gain(i), -units[i][0], -i))
        score = gain(best)
        if score <= 0:
            break
        left.discard(best)
        ref, sentence = units[best]
        if groups.get(ref, 0) >= per_group or any(jaccard(tokens[best], c[2]) > 0.6 for c in chosen):
            continue
        chosen.append((score, sentence, tokens[best], ref))
        covered.update(parts[best])
        groups[ref] = groups.get(ref, 0) + 1
    return chosen


class ExtractiveProvider(Provider):
    name = "extractive"

    def __init__(self, **_: object):
        pass

    async def plan(self, query: str, num_subtasks: int, context: list[Hit], meter: Meter) -> list[Subtask]:
        _account(meter)
        topic = self._topic(query)
        candidates: list[tuple[str, str, str]] = [(query.strip()[:200], query.strip(), "The question as asked.")]
        for facet in FACET_SPLIT.split(query):
            facet = QUESTION_WORDS.sub("", facet.strip(" .")).strip()
            if len(tokenize(facet)) >= 2:
                candidates.append((facet[:1].upper() + facet[1:200], f"{facet} {topic}".strip(),
                                   f"The facet '{facet}' of the question."))
        query_tokens = tokenize(query)
        related = sorted(context, key=lambda h: -jaccard(query_tokens, tokenize(self._heading(h))))
        for hit in related:
            heading = self._heading(hit)
            if heading and len(tokenize(heading)) >= 1:
                candidates.append((heading[:200], f"{heading} {topic}".strip(),
                                   f"What the documentation says under '{heading}'."))
        for title, search in ASPECTS:
            candidates.append((title.format(t=topic), search.format(t=topic),
                               f"{title.format(t=topic)}, as far as the sources cover it."))
        subtasks: list[Subtask] = []
        seen: list[list[str]] = []
        for title, search, description in candidates:
            tokens = tokenize(title)
            if any(jaccard(tokens, other) > 0.6 for other in seen):
                continue
            seen.append(tokens)
            subtasks.append(Subtask(f"subtask_{len(subtasks) + 1}", title, search, description))
            if len(subtasks) == num_subtasks:
                return subtasks
        while len(subtasks) < num_subtasks:  # more agents than distinct facets: number the rest
            n = len(subtasks) + 1
            subtasks.append(Subtask(f"subtask_{n}", f"{topic} (part {n})", f"{query} {n}", "A further angle."))
        return subtasks

    async def write_finding(self, subtask: Subtask, passages: list[Hit], meter: Meter,
                            on_progress: ProgressCallback | None = None) -> str:
        _account(meter)
        found = [(ref, sentence, ok) for ref, hit in enumerate(passages, start=1)
                 for sentence, ok in _finding_units(hit.text or hit.snippet)]
        sentences = [(ref, sentence) for ref, sentence, _ in found]
        tokens = [tokenize(sentence) for _, sentence in sentences]
        # design: a follow-up quotes what earlier rounds did not: a sentence they already
        # quoted earns nothing (it still lends its terms to the sentence after it, below).
        known = [tokenize(sentence) for sentence in subtask.known]
        units = [i for i, (_, _, ok) in enumerate(found) if ok and not is_known(tokens[i], known)]
        if not units:
            return f"No passage in the available sources addresses: {subtask.title}."
        parts = BM25(tokens).term_scores(tokenize(f"{subtask.query} {subtask.title}"))
        # design: reference prose often names its subject in one sentence and states the fact
        # in the next ("gc.collect() ... run a full collection. The number of unreachable
        # objects found is returned."): a sentence also earns part of the terms its predecessor
        # in the same passage matched.
        scored = []
        for i in units:
            own = dict(parts[i])
            if i > 0 and sentences[i - 1][0] == sentences[i][0]:
                for term, value in parts[i - 1].items():
                    own.setdefault(term, CONTEXT_WEIGHT * value)
            scored.append(own)
        # design: a gentle prior for higher-ranked passages breaks ties toward the best source.
        priors = [1 - 0.03 * (sentences[i][0] - 1) for i in units]
        chosen = _pick_covering([sentences[i] for i in units], [tokens[i] for i in units], scored, priors,
                                MAX_FINDING_SENTENCES, per_group=3)
        if not chosen:
            return f"No passage in the available sources addresses: {subtask.title}."
        text = ""
        for _, sentence, _, ref in chosen:
            text = f"{text} {_cite(sentence, f'[{ref}]')}".strip()
            if on_progress is not None:
                await on_progress(text)
        return text

    async def next_action(self, view: AgentView, meter: Meter, on_progress: ProgressCallback | None = None) -> Action:
        """Deterministic: stop when the last step brought nothing new; else search for the
        subtask's words the passages do not contain yet, with the salient words of the best
        passages (pseudo-relevance feedback); stop when that query was already asked."""
        _account(meter)
        last = view.steps[-1] if view.steps else None
        if last is not None and last.new_evidence == 0:
            return Action("finish")
        subtask = view.subtask
        words = _surface_words(f"{subtask.query} {subtask.title}")
        held = set(tokenize(" ".join(f"{h.title} {h.text or h.snippet}" for h in view.passages)))
        uncovered = [word for stem, word in words.items() if stem not in held]
        best = view.passages[:FEEDBACK_PASSAGES]
        surface = _surface_words(" ".join(f"{h.title} {h.text or h.snippet}" for h in best))
        asked = {stem for step in view.steps if step.query for stem in tokenize(step.query)}
        feedback = [surface[t] for t in key_terms([h.text or h.snippet for h in best], 12)
                    if t in surface and t not in words and t not in asked][:FEEDBACK_TERMS]
        core = uncovered or list(words.values())[:3]
        query = " ".join(dict.fromkeys(core + feedback))
        issued = [set(tokenize(step.query)) for step in view.steps if step.query]
        if not tokenize(query) or set(tokenize(query)) in issued:
            return Action("finish")
        return Action("search", query=query)

    async def review(self, query: str, findings: list[tuple[str, str]], max_gaps: int, meter: Meter) -> list[str]:
        """Deterministic: a facet of the question is answered when one sentence of the
        findings holds all its content words; words scattered over several sentences answer
        nothing (a stricter bar than any word in any finding, which long findings meet for
        almost every facet). Each facet left unanswered is a gap, asked as the facet itself;
        a question of one facet asks for its missing words with the first words the best
        sentence did cover, for context."""
        _account(meter)
        sentences = [set(tokenize(sentence)) for _, text in findings if not text.startswith("No passage")
                     for sentence in split_sentences(text)]
        facets = [_strip_question_words(f.strip(" .")) for f in FACET_SPLIT.split(query)]
        facets = [f for f in facets if tokenize(f)]
        gaps: list[str] = []
        for facet in facets:
            words = _surface_words(facet)
            best = max(sentences, key=lambda held: (len(held & words.keys()), -len(held)), default=set())
            if words.keys() <= best:
                continue
            if len(facets) > 1:
                gaps.append(facet)
            else:
                missing = [word for stem, word in words.items() if stem not in best]
                context = [word for stem, word in words.items() if stem in best][:2]
                gaps.append(" ".join(dict.fromkeys(missing + context)))
        return gaps[:max_gaps]

    async def synthesize(self, query: str, level: str, parts: list[tuple[str, str]], meter: Meter) -> str:
        _account(meter)
        sections = [section for label, text in parts for section in self._sections(label, text)]
        units = [(i, s) for i, (_, body) in enumerate(sections) for s in claims(body)
                 if CITATION_RE.search(s)]
        if not units:
            return "No cited findings were available to synthesize."
        tokens = [tokenize(s) for _, s in units]
        scores = BM25(tokens).scores(tokenize(query))
        candidates = [(score + 1e-6, s, toks, i) for (i, s), toks, score in zip(units, tokens, scores)]
        lead = _pick(candidates, 5 if level == "camina" else 3, per_group=1, seen=[])
        seen: list[list[str]] = []
        lines = ["## Summary" if level == "camina" else "", " ".join(s for _, s, _, _ in lead), ""]
        lines.append("## Findings\n" if level == "camina" else "")
        gaps = []
        for i, (label, _) in enumerate(sections):
            own = [c for c in candidates if c[3] == i]
            kept = _pick(own, MAX_FINDING_SENTENCES, per_group=MAX_FINDING_SENTENCES, seen=seen)
            if not kept:
                gaps.append(label)
                continue
            kept.sort(key=lambda c: next(n for n, u in enumerate(units) if u == (i, c[1])))
            lines += [f"### {label}", "", " ".join(s for _, s, _, _ in kept), ""]
        if gaps and level == "camina":
            lines += ["## Gaps", "", *[f"- {label}: no source in the corpus addressed it." for label in gaps]]
        return "\n".join(line for line in lines if line is not None).strip().replace("\n\n\n", "\n\n")

    async def summarize(self, query: str, sources: list[Source], meter: Meter) -> str:
        _account(meter)
        units = [(s.id, sentence) for s in sources for sentence in split_sentences(s.snippet.strip("… "))
                 if is_prose(sentence)]
        lines = ["## Summary", ""]
        if units:
            tokens = [tokenize(sentence) for _, sentence in units]
            scores = BM25(tokens).scores(tokenize(query))
            order = {s.id: n for n, s in enumerate(sources)}
            candidates = [(score, sentence, toks, order[sid]) for (sid, sentence), toks, score
                          in zip(units, tokens, scores)]
            chosen = _pick(candidates, 5, per_group=1)
            summary = " ".join(_cite(sentence, f"[{sources[group].id}]") for _, sentence, _, group in chosen)
            lines.append(summary or "The results do not address the query directly; see the list below.")
        else:
            lines.append("No results were found.")
        lines += ["", "## Top results", ""]
        for source in sources[:10]:
            first = (split_sentences(source.snippet) or [""])[0]
            lines.append(f"- [{source.id}] {source.title}" + (f" — {first}" if first else ""))
        return "\n".join(lines)

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _topic(query: str) -> str:
        words = [w for w in re.findall(r"[\w.-]+", query) if tokenize(w)]
        return " ".join(words[:4]) or query[:60]

    @staticmethod
    def _heading(hit: Hit) -> str:
        heading = str(hit.metadata.get("heading") or "")
        return heading or hit.title.split(" — ")[-1]

    @staticmethod
    def _sections(label: str, text: str) -> list[tuple[str, str]]:
        """`### ` subsections of a text, each (heading, body); the whole text when there are none.
        A merged text's lead paragraph repeats its sections, so it is dropped."""
        pieces = re.split(r"^###\s+(.+)$", text, flags=re.MULTILINE)
        if len(pieces) == 1:
            return [(label, text)]
        return [(pieces[i].strip(), pieces[i + 1]) for i in range(1, len(pieces) - 1, 2)]
