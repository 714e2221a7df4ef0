"""Chat conversations built from templates, in OpenAI "messages" format.

No dialogue corpus exists offline, so conversations are generated: checkable skills whose answer is
exact (arithmetic, counting, spelling, unit conversion), knowledge answers looked up in WordNet,
Debian descriptions and man pages, and a little small talk. Some conversations continue with a
follow-up that only makes sense with the earlier turns ("And if you add 3 to that?"). Answers are
short and always phrased the same way (an arithmetic answer is just the number) so a tiny model
can learn them; questions vary the way people type (quotes or none, capitals, final punctuation).
Train keeps repeats, so a common question (a greeting, a small sum) comes up as often as it is
drawn. Val is drawn after train, slot by slot from seeds of its own, and a val conversation whose
user/assistant turns occur in train (or in an earlier slot) is redrawn in its slot, so no val instance
is ever seen in training, and a build that reads another package list changes only the slots that
draw from it.

Arithmetic then gets extra training conversations of its own, drawn after val and skipping any
that equals a val one: multi-digit sums are the skill the model was slowest to learn, and adding
them last leaves the first 150,000 conversations and the val set as they were.
"""

import json
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from fm_multi.data.common import write_jsonl

COUNTS = {"full": {"train": 150000, "val": 1000, "arithmetic": 60000},
          "small": {"train": 300, "val": 60, "arithmetic": 60}}
SKILL_ODDS = {"arithmetic": 0.22, "counting": 0.12, "spelling": 0.14, "units": 0.12,
              "definition": 0.18, "package": 0.10, "command": 0.08, "smalltalk": 0.04}
CHECKABLE = {"arithmetic", "counting", "spelling", "units"}
SYSTEM_ODDS, FOLLOW_UP_ODDS = 0.25, 0.35
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are fm_multi, a small helpful assistant. Answer briefly.",
                  "Answer the user's questions concisely.",
                  "You are a friendly assistant that gives short, exact answers."]
QUESTIONS = {
    "+": ["What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}.", "{a} + {b} = ?"],
    "-": ["What is {a} - {b}?", "What is {a} minus {b}?", "Subtract {b} from {a}.", "{a} - {b} = ?"],
    "*": ["What is {a} * {b}?", "What is {a} times {b}?", "Multiply {a} by {b}.", "{a} x {b} = ?"],
    "letters": ["How many letters are in the word {w}?", "How many letters does {w} have?"],
    "spell": ["Spell the word {w}.", "How do you spell {w}?", "Spell {w} letter by letter."],
    "backwards": ["Spell {w} backwards.", "Spell the word {w} backwards."],
    "to_small": ["How many {s}s are in {n} {b}?", "Convert {n} {b} to {s}s."],
    "to_big": ["Convert {m} {s} to {b}s.", "How many {b}s is {m} {s}?"],
    "define": ["What does {w} mean?", "Define {w}.", "What is the meaning of the word {w}?"],
    "package": ["What is the Debian package {p}?", "What does the {p} package do?", "What is {p}?",
                "Briefly, what is the package {p}?"],
    "which_command": ["Which command can I use to {s}?", "What command should I run to {s}?"],
    "what_command": ["What does the {c} command do?", "What is {c} for?"],
}
SMALLTALK = [(["Hello!", "Hi there.", "Hi!", "Hey!", "Good morning!", "Good evening."], "Hello! How can I help you?"),
             (["Who are you?", "What are you?", "What is your name?", "What's your name?"],
              "I am fm_multi, a small multimodal assistant."),
             (["What can you do?", "How can you help me?", "What are you able to do?"],
              "I can chat, summarize text, classify images, detect objects and transcribe speech."),
             (["Thank you!", "Thanks, that helps.", "Thanks!", "Thank you very much."], "You're welcome!"),
             (["Goodbye!", "Bye!", "See you later."], "Goodbye!"),
             (["How are you?", "How are you doing?", "How's it going?"], "I'm fine, thank you. How can I help you?")]
# Unit chains: each unit converts into the next (smaller) one by an exact factor.
UNIT_CHAINS = [[("kilometer", "km", 1000), ("meter", "m", 100), ("centimeter", "cm", 10), ("millimeter", "mm", None)],
               [("kilogram", "kg", 1000), ("gram", "g", 1000), ("milligram", "mg", None)],
               [("week", "wk", 7), ("day", "d", 24), ("hour", "h", 60), ("minute", "min", 60), ("second", "s", None)],
               [("liter", "L", 1000), ("milliliter", "mL", None)]]
# Libraries, kernels and -dev/-doc/-data splits would drown the packages people ask about.
LIBRARY_LIKE = re.compile(r"^(lib|linux-|golang-|node-|r-cran-|ruby-|php-|texlive-)"
                          r"|-(dev|doc|data|dbg|dbgsym|common|prof|tests?)$")


@dataclass
class Knowledge:
    """What the knowledge skills may talk about (train-split packages and pages only)."""
    words: list[str]                    # common nouns, for spelling and counting
    sentences: list[str]                # plain example sentences, for word counting
    senses: list[tuple[str, object]]    # (word, WordNet synset of its first sense)
    packages: list[tuple[str, str, str]]  # (name, synopsis, first sentence of the description)
    commands: list[tuple[str, str, bool]]  # (command, summary, summary names it uniquely)

    def has(self, skill: str) -> bool:
        needs = {"package": self.packages, "command": self.commands, "definition": self.senses,
                 "counting": self.words and self.sentences, "spelling": self.words}
        return bool(needs.get(skill, True))


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _quoted(r: random.Random, word: str) -> str:
    return f"'{word}'" if r.random() < 0.6 else word


def _typed(r: random.Random, text: str) -> str:
    """A question as people type it: sometimes all lower case, sometimes without its final mark."""
    text = text.lower() if r.random() < 0.15 else text
    return text.rstrip(".!?") if r.random() < 0.15 else text


def _number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.3f}".rstrip("0").rstrip(".")


# ---- checkable skills ---------------------------------------------------------------------------

def arithmetic(r: random.Random, kb: Knowledge) -> list[tuple[str, str]]:
    op = r.choice("+-*")
    if op == "*":
        a, b = (r.randint(0, 12), r.randint(0, 12)) if r.random() < 0.7 else (r.randint(10, 99), r.randint(2, 9))
    else:
        top = r.choices([9, 99, 999], weights=[0.15, 0.65, 0.2])[0]
        a, b = r.randint(0, top), r.randint(0, top)
        if op == "-":
            a, b = max(a, b), min(a, b)                 # no negative differences
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    turns = [(r.choice(QUESTIONS[op]).format(a=a, b=b), str(value))]
    while r.random() < FOLLOW_UP_ODDS and len(turns) < 3:
        n = r.randint(1, 20)
        question, value = r.choice([("And if you add {n} to that?", value + n), ("Now subtract {n}.", value - n),
                                    ("And times {n}?", value * n), ("What is that doubled?", 2 * value)])
        turns.append((question.format(n=n), str(value)))
    return turns


def counting(r: random.Random, kb: Knowledge) -> list[tuple[str, str]]:
    w, kind = r.choice(kb.words), r.random()
    if kind < 0.3:
        return [(r.choice(QUESTIONS["letters"]).format(w=_quoted(r, w)), str(len(w)))]
    if kind < 0.6:
        c = r.choice(w) if r.random() < 0.8 else r.choice("abcdefghijklmnopqrstuvwxyz")
        return [(f"How many times does the letter '{c}' appear in {_quoted(r, w)}?", str(w.count(c)))]
    if kind < 0.75:
        return [(f"How many vowels are in {_quoted(r, w)}?", str(sum(ch in "aeiou" for ch in w)))]
    s = r.choice(kb.sentences)
    return [(f'How many words are in this sentence: "{s}"', str(len(s.split())))]


def spelling(r: random.Random, kb: Knowledge) -> list[tuple[str, str]]:
    w, kind = r.choice(kb.words), r.random()
    forwards, backwards, q = "-".join(w), "-".join(reversed(w)), _quoted(r, w)
    if kind < 0.3:
        turns = [(r.choice(QUESTIONS["backwards"]).format(w=q), backwards)]
        again = ("Now spell it forwards.", forwards)
    elif kind < 0.8:
        turns = [(r.choice(QUESTIONS["spell"]).format(w=q), forwards)]
        again = ("Now spell it backwards.", backwards)
    else:
        which = r.choice(["first", "last"])
        turns = [(f"What is the {which} letter of {q}?", w[0] if which == "first" else w[-1])]
        again = ("Now spell it backwards.", backwards)
    if r.random() < FOLLOW_UP_ODDS:
        turns.append(r.choice([("How many letters does it have?", str(len(w))), again,
                               ("What is its last letter?", w[-1])]))
    return turns


def _plural(name: str, value: Fraction) -> str:
    return name if value == 1 else name + "s"


def units(r: random.Random, kb: Knowledge) -> list[tuple[str, str]]:
    chain = r.choice(UNIT_CHAINS)
    i = r.randrange(len(chain) - 1)
    (big, big_abbr, factor), (small, small_abbr, _) = chain[i], chain[i + 1]
    if r.random() < 0.65:                                       # big -> small, maybe further down
        n = Fraction(r.randint(1, 20), r.choice([1, 1, 1, 2, 4]))
        b = big_abbr if r.random() < 0.3 else _plural(big, n)
        q = r.choice(QUESTIONS["to_small"])
        value, j = n * factor, i + 1
        turns = [(q.format(s=small, n=_number(n), b=b), f"{_number(value)} {_plural(small, value)}")]
        while r.random() < FOLLOW_UP_ODDS and j < len(chain) - 1:
            value, j = value * chain[j][2], j + 1
            turns.append((f"And in {chain[j][0]}s?", f"{_number(value)} {_plural(chain[j][0], value)}"))
        return turns
    m = Fraction(r.randint(1, 40) * factor, r.choice([1, 2, 4, 5, 10]))  # small -> big, exact decimals
    s_ = small_abbr if r.random() < 0.3 else _plural(small, m)
    q = r.choice(QUESTIONS["to_big"])
    return [(q.format(m=_number(m), s=s_, b=big), f"{_number(m / factor)} {_plural(big, m / factor)}")]


# ---- knowledge skills ---------------------------------------------------------------------------

def definition(r: random.Random, kb: Knowledge) -> list[tuple[str, str]]:
    w, s = r.choice(kb.senses)
    turns = [(r.choice(QUESTIONS["define"]).format(w=_quoted(r, w)), _sentence(s.definition))]
    if r.random() < FOLLOW_UP_ODDS:
        others = [x for x in s.lemmas if x.lower() != w and re.fullmatch(r"[a-z ]+", x)]
        pos = {"noun": "A noun.", "verb": "A verb.", "adj": "An adjective.", "adv": "An adverb."}[s.pos]
        options = [("What part of speech is it?", pos)]
        if s.examples:
            options.append(("Use it in a sentence.", _sentence(s.examples[0])))
        if others:
            options.append(("Give me a synonym.", others[0]))
        turns.append(r.choice(options))
    return turns


def package(r: random.Random, kb: Knowledge) -> list[tuple[str, str]]:
    name, synopsis, detail = r.choice(kb.packages)
    turns = [(r.choice(QUESTIONS["package"]).format(p=name), _sentence(synopsis))]
    if detail and r.random() < FOLLOW_UP_ODDS:
        turns.append(("Tell me more about it.", detail))
    return turns


def command(r: random.Random, kb: Knowledge) -> list[tuple[str, str]]:
    cmd, summary, unique = r.choice(kb.commands)
    if unique and r.random() < 0.5:
        turns = [(r.choice(QUESTIONS["which_command"]).format(s=summary), cmd)]
    else:
        turns = [(r.choice(QUESTIONS["what_command"]).format(c=cmd), _sentence(summary))]
    if r.random() < FOLLOW_UP_ODDS:
        turns.append(("How do I read its manual?", f"man {cmd}"))
    return turns


def smalltalk(r: random.Random, kb: Knowledge) -> list[tuple[str, str]]:
    questions, answer = r.choice(SMALLTALK)
    return [(r.choice(questions), answer)]


SKILLS = {"arithmetic": arithmetic, "counting": counting, "spelling": spelling, "units": units,
          "definition": definition, "package": package, "command": command, "smalltalk": smalltalk}


# ---- assembling conversations -------------------------------------------------------------------

def knowledge(src) -> Knowledge:
    """Pick the facts the knowledge skills use from a text.TextSources (train split only)."""
    from fm_multi.data import sources
    words = [w for w in sources.common_words("noun") if len(w) <= 10]
    defs = {}
    for pos, senses in src.senses.items():             # a word keeps its noun sense, then verb, adj
        for w in sources.common_words(pos):
            s = senses.get(w)
            if w not in defs and s and 3 <= len(s.definition.split()) <= 25:
                defs[w] = s
    sentences = sorted({e for s in src.synsets for e in s.examples
                        if re.fullmatch(r"[A-Za-z' ,]+", e) and 4 <= len(e.split()) <= 12})
    packages = []
    for p in src.debian[0]:
        # Libraries, kernels and -dev/-doc/-data splits would drown the packages people ask about.
        if p.name in src.val_names or LIBRARY_LIKE.search(p.name) or not 2 <= len(p.synopsis.split()) <= 12:
            continue
        first = re.split(r"(?<=[.!?])\s", p.text, maxsplit=1)[0]
        packages.append((p.name, p.synopsis, first if 5 <= len(first.split()) <= 40 else ""))
    return Knowledge(words, sentences, sorted(defs.items()), packages, _commands(src))


def _commands(src) -> list[tuple[str, str, bool]]:
    from fm_multi.data import sources
    pages = [p for p in src.man_pages if p.name.endswith((".1", ".8")) and p.name not in src.val_names]
    owners = {}
    for p in pages:
        owners.setdefault(p.summary.lower(), set()).update(p.commands)
    # "Which command can I use to <summary>?" only reads well when the summary starts with a verb.
    verbs = set(sources.common_words("verb"))
    out = []
    for p in pages:
        first = p.summary.split()[0]
        unique = len(owners[p.summary.lower()]) == 1 and first in verbs
        out.append((p.commands[0], p.summary, unique))
    return out


def conversation(r: random.Random, kb: Knowledge, skill: str | None = None) -> dict:
    skill = skill or r.choices(list(SKILL_ODDS), weights=list(SKILL_ODDS.values()))[0]
    if not kb.has(skill):
        skill = "arithmetic"                    # a tiny build may lack a source; never crash on it
    messages = [{"role": "system", "content": r.choice(SYSTEM_PROMPTS)}] if r.random() < SYSTEM_ODDS else []
    for user, assistant in SKILLS[skill](r, kb):
        messages += [{"role": "user", "content": _typed(r, user)}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, "skill": skill, "checkable": skill in CHECKABLE}


def _key(conv: dict) -> str:
    # System prompts, quotes, capitals and a final mark do not change a question, so they do not make
    # an instance new.
    return json.dumps([m["content"].lower().replace("'", "").rstrip(".!?") if m["role"] == "user" else m["content"]
                       for m in conv["messages"] if m["role"] != "system"], ensure_ascii=False)


def generate(kb: Knowledge, seed: int, split: str, n: int, exclude: set[str] | None = None,
             skill: str | None = None) -> list[dict]:
    """n conversations (of one skill, if given) whose keys are not in `exclude`; repeats are kept."""
    out, exclude = [], exclude or set()
    for i in range(50 * n):
        conv = conversation(random.Random(f"chat/{seed}/{split}/{i}"), kb, skill)
        if _key(conv) not in exclude:
            out.append(conv)
            if len(out) == n:
                break
    return out


def generate_distinct(kb: Knowledge, seed: int, split: str, n: int, exclude: set[str]) -> list[dict]:
    """n conversations with distinct keys, none in `exclude`, one per slot: slot i tries its own draws
    (i, 0), (i, 1)... until one is new. A draw that another build turns down (its package list or
    train set differs) so changes only its own slot, and the other slots, the checkable skills among
    them, come out the same on every build."""
    out, seen = [], set(exclude)
    for i in range(n):
        for j in range(50):
            conv = conversation(random.Random(f"chat/{seed}/{split}/{i}/{j}"), kb)
            key = _key(conv)
            if key not in seen:
                seen.add(key)
                out.append(conv)
                break
    return out


def build(out: Path, src, small: bool, seed: int) -> dict:
    """Write text/chat_{train,val}.jsonl; returns counts for build.json."""
    kb, counts = knowledge(src), COUNTS["small" if small else "full"]
    train = generate(kb, seed, "train", counts["train"])
    val = generate_distinct(kb, seed, "val", counts["val"], {_key(c) for c in train})
    extra = generate(kb, seed, "train-arithmetic", counts["arithmetic"], {_key(c) for c in val}, skill="arithmetic")
    train += extra
    result = {"train": write_jsonl(out / "text" / "chat_train.jsonl", train),
              "val": write_jsonl(out / "text" / "chat_val.jsonl", val), "extra_arithmetic": len(extra)}
    for split, convs in (("train", train), ("val", val)):
        result[f"{split}_skills"] = {s: sum(c["skill"] == s for c in convs) for s in SKILLS}
    return result
