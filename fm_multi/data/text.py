"""Summarization pairs and the plain-text pretraining corpus.

Summarization: a Debian package's long description -> its one-line synopsis, and a man page's
DESCRIPTION -> the summary on its NAME line, documents cut to DOC_WORDS words. The split is by name
through a stable hash, so one package or page never lands in both splits; packages that share the
same long description (foo, foo-data, foo-doc) are kept together by hashing the smallest name of
the group. The corpus holds train-split text only (descriptions, man pages, WordNet glosses), one
paragraph per line, so pretraining never reads a val document.
"""

import shutil
from collections import defaultdict
from functools import cached_property
from pathlib import Path

from fm_multi.data import sources
from fm_multi.data.common import is_val, parallel_map, truncate_words, write_card, write_jsonl

DOC_WORDS = 120
MIN_DOC_WORDS = 20
MAX_SUMMARY_WORDS = 20
LIMITS = {"full": {"man": 3000, "debian": None, "wordnet": None},
          "small": {"man": 24, "debian": 300, "wordnet": 400}}


def _debian_rows(packages: list[sources.Package]) -> list[dict]:
    groups = defaultdict(list)
    for p in packages:
        groups[p.text].append(p)
    rows = []
    for text, group in groups.items():
        split = "val" if is_val(min(p.name for p in group)) else "train"
        for p in group:
            n = len(p.synopsis.split())
            if len(text.split()) >= MIN_DOC_WORDS and 2 <= n <= MAX_SUMMARY_WORDS:
                rows.append({"document": truncate_words(text, DOC_WORDS), "summary": p.synopsis,
                             "source": "debian", "name": p.name, "split": split})
    return rows


def _man_rows(pages: list[sources.ManPage]) -> list[dict]:
    rows = []
    for page in pages:
        n = len(page.summary.split())
        if len(page.description.split()) >= MIN_DOC_WORDS and 2 <= n <= MAX_SUMMARY_WORDS:
            rows.append({"document": truncate_words(page.description, DOC_WORDS), "summary": page.summary,
                         "source": "man", "name": page.name, "split": "val" if is_val(page.name) else "train"})
    return rows


class TextSources:
    """The text sources of one build, each read once and shared by summarize, chat and speech."""

    def __init__(self, small: bool, workers: int, use_translations: bool):
        self.limits = LIMITS["small" if small else "full"]
        self.workers = workers
        self.use_translations = use_translations and not small

    @cached_property
    def debian(self) -> tuple[list[sources.Package], str]:
        packages, origin = sources.debian_packages(self.use_translations)
        return packages[:self.limits["debian"]] if self.limits["debian"] else packages, origin

    @cached_property
    def man_pages(self) -> list[sources.ManPage]:
        if shutil.which("man") is None:
            print("[data] warning: man-db is not installed; building text without man pages", flush=True)
            return []
        files = sources.man_page_files(self.limits["man"])
        return [p for p in parallel_map(sources.read_man_page, files, self.workers, desc="man pages") if p]

    @cached_property
    def synsets(self) -> list[sources.Synset]:
        return sources.wordnet(self.limits["wordnet"])

    @cached_property
    def senses(self) -> dict[str, dict[str, sources.Synset]]:
        """{part of speech: {lemma: first sense}} for nouns, verbs and adjectives."""
        return {pos: sources.first_senses(pos, self.limits["wordnet"]) for pos in ("noun", "verb", "adj")}

    @cached_property
    def summarize(self) -> dict[str, list[dict]]:
        return summarize_rows(self.debian[0], self.man_pages)

    @cached_property
    def val_names(self) -> set[str]:
        """Packages and man pages of the summarization val split, kept out of corpus and chat."""
        return {r["name"] for r in self.summarize["val"]}


def summarize_rows(packages, pages) -> dict[str, list[dict]]:
    """Deduplicated pairs per split, in a stable order (source, then name)."""
    seen, out = set(), {"train": [], "val": []}
    for row in sorted(_debian_rows(packages) + _man_rows(pages), key=lambda r: (r["source"], r["name"])):
        key = (row["document"], row["summary"])
        if key not in seen:
            seen.add(key)
            split = row.pop("split")
            out[split].append(row)
    return out


def corpus_lines(packages, pages, synsets, val_names: set[str]) -> list[str]:
    """Train-only paragraphs, one per line, exact duplicates removed (first occurrence kept)."""
    lines = []
    for p in packages:
        if p.name not in val_names:
            lines.append(f"{p.name}: {p.synopsis}.")
            lines += p.text.split("\n")
    for page in pages:
        if page.name not in val_names:
            lines.append(f"{', '.join(page.commands)}: {page.summary}.")
            lines += page.description.split("\n")
    for s in synsets:
        text = f"{s.lemmas[0]} ({s.pos}): {s.definition}."
        if len(s.lemmas) > 1:
            text += f" Also called {', '.join(s.lemmas[1:])}."
        if s.examples:
            text += " For example: " + "; ".join(s.examples) + "."
        lines.append(text)
    seen, out = set(), []
    for line in (" ".join(x.split()) for x in lines):
        if len(line.split()) >= 3 and line not in seen:
            seen.add(line)
            out.append(line)
    return out


def build(out: Path, src: TextSources) -> dict:
    """Write text/summarize_{train,val}.jsonl and text/corpus.txt; returns counts for build.json."""
    packages, origin = src.debian
    rows, root = src.summarize, out / "text"
    counts = {split: write_jsonl(root / f"summarize_{split}.jsonl", rows[split]) for split in rows}
    lines = corpus_lines(packages, src.man_pages, src.synsets, src.val_names)
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts.update(corpus_lines=len(lines), corpus_words=sum(len(x.split()) for x in lines),
                  debian_source=origin, packages=len(packages), man_pages=len(src.man_pages))
    return counts


def write_text_card(root: Path, counts: dict) -> None:
    """One card for the whole text folder (summarization, chat and corpus)."""
    s, c = counts.get("summarize", {}), counts.get("chat", {})
    write_card(root / "DATASET_CARD.md", "fm_multi text sets", {
        "Summarization": f"""
`summarize_{{train,val}}.jsonl` ({s.get('train', 0)} / {s.get('val', 0)} rows): {{"document", "summary", "source",
"name"}}. Debian long description -> one-line synopsis (descriptions from {s.get('debian_source', '?')}) and
man page DESCRIPTION -> NAME summary, documents cut to {DOC_WORDS} words. Split by package/page name through
a stable hash (about 5% val); packages sharing one long description stay in one split.""",
        "Chat": f"""
`chat_{{train,val}}.jsonl` ({c.get('train', 0)} / {c.get('val', 0)} conversations): OpenAI-style "messages"
plus "skill" and "checkable". Built from templates: checkable skills with one exact answer (arithmetic,
counting, spelling, unit conversion, some with follow-up turns that need the context) and knowledge
answers taken from WordNet, Debian descriptions and man pages. Questions vary as people type them (quotes or
none, capitals, final mark). Train keeps repeats, so common questions (greetings, small sums) come up as
often as they are drawn; {c.get('extra_arithmetic', 0)} extra arithmetic conversations close the train
file: multi-digit sums are the skill the model was slowest to learn. No val conversation appears in
train, even with other quotes, capitals or marks.""",
        "Corpus": f"""
`corpus.txt`: {s.get('corpus_lines', 0)} lines, {s.get('corpus_words', 0)} words, one paragraph per line, from
train-split Debian descriptions and man pages and all WordNet glosses and examples.""",
        "Sources and licences": """
WordNet 3.0 (WordNet licence, free with attribution to Princeton University), Debian package
descriptions (each under its package's licence, DFSG-free), man pages (each under its package's
licence). Chat templates and checkable answers are generated by fm_multi.""",
    })
