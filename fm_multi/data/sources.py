"""Readers for the local text sources: WordNet, Debian package descriptions and man pages.

These are the only English text the machines carry (DATA_SOURCES.md): WordNet's definitions and
example sentences (wordnet-base), the long and one-line descriptions of Debian packages (the
fetched Translation-en index for the full build, /var/lib/dpkg/status of the installed packages
otherwise) and the installed man pages, rendered to plain text with `man --nh --nj`. Every reader
returns items in a sorted, deterministic order.
"""

import gzip
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fm_multi.data import deps

WORDNET_POS = ("noun", "verb", "adj", "adv")


@dataclass(frozen=True)
class Synset:
    pos: str                 # noun | verb | adj | adv
    lemmas: tuple[str, ...]  # "hot dog", not "hot_dog"
    definition: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Package:
    name: str
    synopsis: str            # the one-line description
    text: str                # the long description, paragraphs joined by a blank-free space


@dataclass(frozen=True)
class ManPage:
    name: str                # "ls.1"
    commands: tuple[str, ...]
    summary: str             # the NAME line after the dash: "list directory contents"
    description: str         # the DESCRIPTION section as running text


# ---- WordNet ------------------------------------------------------------------------------------

def _parse_synset_line(line: str, pos: str) -> tuple[str, Synset]:
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    n_words = int(fields[3], 16)
    # Adjective lemmas may carry a syntactic marker: "able(a)".
    lemmas = tuple(re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in fields[4:4 + 2 * n_words:2])
    parts = [p.strip() for p in gloss.strip().split(";")]
    examples = tuple(p.strip('"').strip() for p in parts if p.startswith('"'))
    definition = "; ".join(p for p in parts if p and not p.startswith('"'))
    return fields[0], Synset(pos, lemmas, definition, examples)


def wordnet(limit: int | None = None) -> list[Synset]:
    """All synsets (or the first `limit` of each part of speech), in file order."""
    out = []
    for pos in WORDNET_POS:
        out += list(_synsets(pos, limit).values())
    return out


def _synsets(pos: str, limit: int | None) -> dict[str, Synset]:
    table = {}
    with open(Path(deps.WORDNET_DIR) / f"data.{pos}", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):                  # licence header
                continue
            offset, synset = _parse_synset_line(line, pos)
            table[offset] = synset
            if limit and len(table) >= limit:
                break
    return table


def first_senses(pos: str, limit: int | None = None) -> dict[str, Synset]:
    """Each lemma's most frequent sense as that part of speech (WordNet's index lists senses by
    frequency), keyed by lemma."""
    table, senses = _synsets(pos, limit), {}
    with open(Path(deps.WORDNET_DIR) / f"index.{pos}", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            first = fields[-int(fields[2])]             # synset_cnt offsets close the line
            if first in table:
                senses[fields[0].replace("_", " ")] = table[first]
    return senses


def common_words(pos: str = "noun") -> list[str]:
    """Plain lowercase words of 3-12 letters that occur in WordNet's sense-tagged corpus."""
    out = []
    with open(Path(deps.WORDNET_DIR) / f"index.{pos}", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if line.startswith("  ") or not re.fullmatch(r"[a-z]{3,12}", fields[0]):
                continue
            tagged = int(fields[-int(fields[2]) - 1])   # tagsense_cnt precedes the offsets
            if tagged > 0:
                out.append(fields[0])
    return sorted(out)


# ---- Debian package descriptions ----------------------------------------------------------------

def _stanzas(text: str):
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def _long_text(lines: list[str]) -> str:
    """Debian's long-description markup to running text (" ." is an empty line)."""
    paragraphs, current = [], []
    for line in lines:
        line = line.strip()
        if line == ".":
            paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(re.sub(r"^[*+-]\s+", "", line))
    paragraphs.append(" ".join(current))
    return "\n".join(p for p in paragraphs if p)


def _read_index(path: str) -> str:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    if path.endswith((".lz4", ".xz", ".bz2", ".zst")):     # apt's own helper reads its formats
        return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], capture_output=True,
                              check=True).stdout.decode("utf-8", errors="replace")
    return Path(path).read_text(encoding="utf-8", errors="replace")


def debian_packages(use_translations: bool) -> tuple[list[Package], str]:
    """Package descriptions, one per package name, and where they came from.

    With `use_translations` the fetched Translation-en files are read when present (tens of
    thousands of packages); otherwise, or when nothing was fetched, the locally installed
    packages in /var/lib/dpkg/status (no network needed).
    """
    files = deps.translation_files() if use_translations else []
    key, origin = ("Description-en", "Translation-en") if files else ("Description", "dpkg-status")
    texts = [_read_index(f) for f in files] or [Path(deps.DPKG_STATUS).read_text(encoding="utf-8", errors="replace")]
    packages = {}
    for text in texts:
        for st in _stanzas(text):
            if key not in st or "Package" not in st:
                continue
            if origin == "dpkg-status" and "installed" not in st.get("Status", ""):
                continue
            first, *rest = st[key].split("\n")
            packages.setdefault(st["Package"], Package(st["Package"], first.strip(), _long_text(rest)))
    return [packages[n] for n in sorted(packages)], origin


# ---- man pages ----------------------------------------------------------------------------------

def man_page_files(limit: int | None) -> list[str]:
    """English man pages, commands (sections 1 and 8) first, then files, concepts and APIs."""
    order = ["1", "8", "5", "7", "4", "2", "3"]
    files = []
    for sec in order:
        folder = Path(deps.MAN_ROOT) / f"man{sec}"
        if folder.is_dir():
            files += sorted(str(p) for p in folder.iterdir() if "gcloud" not in p.name and p.is_file())
    return files[:limit] if limit else files


def _sections(text: str) -> dict[str, list[str]]:
    sections, current = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = line.strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    return sections


def _description(lines: list[str]) -> str:
    """Body paragraphs of DESCRIPTION (7-space indent), leaving out option lists and examples."""
    paragraphs, current = [], []
    for line in lines + [""]:
        body = line.startswith("       ") and not line.startswith("        ")
        if body and not line.strip().startswith("-"):
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return "\n".join(paragraphs)


def read_man_page(path: str) -> ManPage | None:
    """Render and parse one page; None when it lacks a usable NAME line or DESCRIPTION."""
    env = {**os.environ, "MANWIDTH": "200", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    try:
        text = subprocess.run(["man", "--nh", "--nj", "-l", path], capture_output=True, env=env,
                              timeout=20).stdout.decode("utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        return None
    sections = _sections(re.sub(".\b", "", text))            # drop any overstrike bold
    name_line = " ".join(" ".join(sections.get("NAME", [])).split())
    if " - " not in name_line:
        return None
    names, summary = name_line.split(" - ", 1)
    commands = tuple(n.strip() for n in names.split(",") if n.strip())
    description = _description(sections.get("DESCRIPTION", []))
    if not commands or not summary or not description:
        return None
    page = Path(path).name.removesuffix(".gz")
    return ManPage(page, commands, summary.strip().rstrip("."), description)
