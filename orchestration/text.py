"""A small text toolkit for the offline provider: tokens, sentences, BM25, overlap."""

from __future__ import annotations

import math
import re
from collections import Counter

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than
that the their theirs them themselves then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours yourself yourselves
use using used via per e g i e etc one two may might must shall let lets get gets got make makes made
""".split())

CITATION_RE = re.compile(r"\[(?:S)?\d{1,4}\]")
_WORD = re.compile(r"[^\W_]+(?:[-.][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s*\[(?:S)?\d{1,4}\])*\s+(?=[\"'(\[]?[A-Z0-9`*])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "Fig.", "No.")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_HEADING = re.compile(r"^\s*#{1,6}\s+")


def _stem(word: str) -> str:
    for suffix, minimum in (("ing", 4), ("ies", 3), ("ed", 4), ("ly", 4), ("es", 4), ("s", 3)):
        if word.endswith(suffix) and len(word) - len(suffix) >= minimum:
            if suffix == "ies":
                return word[:-3] + "y"
            if suffix == "es" and not word.endswith(("sses", "xes", "ches", "shes")):
                return word[:-1]
            if suffix == "s" and word.endswith("ss"):
                return word
            return word[: -len(suffix)]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-case content-word stems: stopwords dropped, light suffix stemming."""
    out = []
    for raw in _WORD.findall(CITATION_RE.sub(" ", text).lower()):
        for word in re.split(r"[-.]", raw) if not raw.replace(".", "").isdigit() else [raw]:
            if word and word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
                out.append(_stem(word))
    return out


def split_sentences(text: str) -> list[str]:
    """Sentences of prose; Markdown headings, list items and table rows count as one unit
    each (markers stripped); code fences are skipped. A citation tag after a sentence's
    full stop stays with that sentence."""
    units: list[str] = []
    in_code = False
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            units.extend(_split_prose(" ".join(paragraph)))
            paragraph.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            flush()
            in_code = not in_code
            continue
        if in_code:
            continue
        if not stripped:
            flush()
        elif _HEADING.match(stripped) or stripped.startswith("|"):
            flush()
            unit = _HEADING.sub("", stripped).strip("| ").strip()
            if sum(c.isalnum() for c in unit) >= 3:
                units.append(unit)
        elif _LIST_MARKER.match(stripped):
            flush()
            paragraph.append(_LIST_MARKER.sub("", stripped))
        else:
            paragraph.append(stripped)
    flush()
    units = [re.sub(r"^\*\*[^*]{1,40}\*\*\s*", "", u).replace("**", "") for u in units]
    return [u for u in units if sum(c.isalnum() for c in u) >= 3]


_CODE_TOKEN = re.compile(r"[=/\\{}<>$|]|^--?\w|^[A-Z][A-Z0-9]*_[A-Z0-9_]+$|\(\)$")


def is_prose(sentence: str) -> bool:
    """False for command lines, configuration and other code-like text."""
    words = sentence.split()
    if len(words) < 4 or sentence.count("|") >= 2 or sentence.startswith(("…", "...")) or sentence.endswith(":"):
        return False
    if not (sentence[0].isupper() or sentence[0].isdigit() or sentence[0] in "`\"'(["):
        return False  # a fragment cut from the middle of a sentence or list
    codeish = sum(1 for w in words if _CODE_TOKEN.search(w.strip("`.,;:()")))
    return codeish / len(words) <= 0.25


def _split_prose(text: str) -> list[str]:
    protected = text
    for i, abbreviation in enumerate(_ABBREVIATIONS):
        protected = protected.replace(abbreviation, f"\x00{i}\x00")
    pieces = []
    start = 0
    for match in _SENTENCE_END.finditer(protected):
        end = match.start() + len(match.group(0).rstrip())
        pieces.append(protected[start:end])
        start = match.end()
    pieces.append(protected[start:])
    out = []
    for piece in pieces:
        for i, abbreviation in enumerate(_ABBREVIATIONS):
            piece = piece.replace(f"\x00{i}\x00", abbreviation)
        piece = piece.strip()
        if piece:
            out.append(piece)
    return out


class BM25:
    """Okapi BM25 over tokenised documents."""

    def __init__(self, documents: list[list[str]], k1: float = 1.5, b: float = 0.75):
        self.documents = documents
        self.k1, self.b = k1, b
        self.lengths = [len(d) for d in documents]
        self.average = (sum(self.lengths) / len(documents)) if documents else 0.0
        self.frequencies = [Counter(d) for d in documents]
        document_frequency: Counter[str] = Counter()
        for document in documents:
            document_frequency.update(set(document))
        n = len(documents)
        self.idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in document_frequency.items()}

    def scores(self, query: list[str]) -> list[float]:
        return [sum(parts.values()) for parts in self.term_scores(query)]

    def term_scores(self, query: list[str]) -> list[dict[str, float]]:
        """Per document, each query term it contains with that term's share of the score."""
        out = []
        terms = set(query)
        for frequencies, length in zip(self.frequencies, self.lengths):
            parts: dict[str, float] = {}
            norm = self.k1 * (1 - self.b + self.b * length / self.average) if self.average else self.k1
            for term in terms:
                f = frequencies.get(term)
                if f:
                    parts[term] = self.idf[term] * f * (self.k1 + 1) / (f + norm)
            out.append(parts)
        return out


def jaccard(a: list[str] | set[str], b: list[str] | set[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


def key_terms(texts: list[str], n: int) -> list[str]:
    """The most characteristic stems of `texts` (term frequency x inverse document frequency)."""
    documents = [tokenize(t) for t in texts]
    df: Counter[str] = Counter()
    tf: Counter[str] = Counter()
    for document in documents:
        df.update(set(document))
        tf.update(document)
    total = len(documents) or 1
    ranked = sorted(tf, key=lambda t: (-tf[t] * math.log(1 + total / df[t]), t))
    return ranked[:n]


# A quote closed by its citation ("... currsize [1]. move_to_end ...") ends there, whatever
# case the next one starts with.
_CLAIM_END = re.compile(r"\[S?\d{1,4}\][.!?:]?\s+")


def claims(text: str) -> list[str]:
    """The sentences of a cited text (a finding, a synthesis): cut at sentence ends and after
    every citation that closes a quote, so quotes run together stay apart (other brackets,
    `Union[X, None]`, cut nothing)."""
    pieces, start = [], 0
    for match in _CLAIM_END.finditer(text):
        pieces.append(text[start:match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [sentence for piece in pieces for sentence in split_sentences(piece)]


def strip_citations(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", CITATION_RE.sub("", text)).strip()


# design: a sentence whose words are this close to one already quoted says nothing new (the
# near-duplicate bar the extractive writer's picks use).
KNOWN_SIMILARITY = 0.6


def established(findings: list[str], about: str, limit: int) -> list[str]:
    """The sentences `findings` state (citation tags removed, each once) that share words
    with `about`, most shared words first, at most `limit`: what a follow-up of the gap
    `about` is told earlier rounds already established."""
    wanted = set(tokenize(about))
    ranked: dict[str, int] = {}
    for text in findings:
        for claim in claims(text):
            sentence = strip_citations(claim)
            shared = len(wanted & set(tokenize(sentence)))
            if shared and sentence not in ranked:
                ranked[sentence] = shared
    return sorted(ranked, key=lambda s: -ranked[s])[:limit]  # stable: ties keep the findings' order


def is_known(tokens: list[str], known: list[list[str]]) -> bool:
    """Whether a sentence (its tokens) repeats one of the `known` sentences (theirs)."""
    return any(jaccard(tokens, other) > KNOWN_SIMILARITY for other in known)


def overlap(claim: str, evidence: str) -> float:
    """Share of the claim's content words found in the evidence (0..1)."""
    words = set(tokenize(claim))
    if not words:
        return 0.0
    return len(words & set(tokenize(evidence))) / len(words)


def relevant_excerpt(text: str, query: str, chars: int) -> str:
    """The sentences of a long `text` that best match `query` (BM25), kept in document
    order, up to about `chars` characters: what a worker agent quotes from a page it read."""
    if len(text) <= chars:
        return text
    sentences = [s for s in split_sentences(text) if s.strip()]
    if not sentences:
        return text[:chars]
    scores = BM25([tokenize(s) for s in sentences]).scores(tokenize(query))
    chosen: set[int] = set()
    used = 0
    ranked = sorted(range(len(sentences)), key=lambda i: -scores[i])
    if scores[ranked[0]] > 0:
        ranked = [i for i in ranked if scores[i] > 0]  # sentences sharing no term add nothing
    for i in ranked:
        if used + len(sentences[i]) > chars and chosen:
            break
        chosen.add(i)
        used += len(sentences[i]) + 1
    return " ".join(sentences[i] for i in sorted(chosen))[:chars]
