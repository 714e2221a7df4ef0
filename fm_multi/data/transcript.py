"""Transcript normalisation for speech-to-text: text -> the CTC alphabet (space, a-z, apostrophe).

Numbers and symbols are written out as the words a speaker says ("$3.50" -> "three dollars and
fifty cents", "7:05" -> "seven oh five", "21st" -> "twenty first"), accents are stripped, and
everything else outside the alphabet becomes a word break. The speech builder feeds the TTS engines
the `spoken_form` of a sentence, so audio and transcript always say the same words.
"""

import re
import unicodedata

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"      # the CTC blank is index 0 of the model's vocabulary

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ((10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"))
ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                   "nine": "ninth", "twelve": "twelfth"}
SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "%": " percent ", "°": " degrees ",
           "#": " number ", "×": " times "}
CURRENCY = {"$": ("dollar", "cent"), "£": ("pound", "penny"), "€": ("euro", "cent")}


def number_words(n: int) -> str:
    """Cardinal in words, without "and": 1205 -> "one thousand two hundred five"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for size, name in SCALES:
        if n >= size:
            head, rest = divmod(n, size)
            return number_words(head) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    *head, last = number_words(n).split()
    if last in ORDINAL_ENDINGS:
        last = ORDINAL_ENDINGS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(head + [last])


def _integer(digits: str) -> str:
    # Beyond billions people read digit by digit (phone or serial numbers), and so do we.
    if len(digits) > 12 or (len(digits) > 1 and digits.startswith("0")):
        return " ".join(ONES[int(c)] for c in digits)
    return number_words(int(digits))


def _money(m: re.Match) -> str:
    unit, sub = CURRENCY[m.group(1)]
    whole, cents = int(m.group(2).replace(",", "")), int(m.group(3) or 0)
    words = f"{number_words(whole)} {unit}{'' if whole == 1 else 's'}"
    if cents:
        sub = sub if cents == 1 else ("pence" if sub == "penny" else sub + "s")
        words += f" and {number_words(cents)} {sub}"
    return f" {words} "


def _clock(m: re.Match) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if minute == 0:
        return f" {number_words(hour)} o'clock "
    return f" {number_words(hour)} {'oh ' if minute < 10 else ''}{number_words(minute)} "


def _decimal(m: re.Match) -> str:
    return f" {_integer(m.group(1))} point {' '.join(ONES[int(c)] for c in m.group(2))} "


def _fraction(m: re.Match) -> str:
    top, bottom = int(m.group(1)), int(m.group(2))
    if bottom == 2:
        return f" {number_words(top)} {'half' if top == 1 else 'halves'} "
    name = "quarter" if bottom == 4 else ordinal_words(bottom)
    return f" {number_words(top)} {name}{'' if top == 1 else 's'} "


def _plural_number(m: re.Match) -> str:
    *head, last = _integer(m.group(1)).split()                           # 1990s -> ... nineties
    return " " + " ".join(head + [last[:-1] + "ies" if last.endswith("y") else last + "s"]) + " "


def spoken_form(text: str) -> str:
    """Write numbers, money, times and symbols as words; keeps case and punctuation otherwise."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)                     # 12,000 -> 12000
    text = re.sub(r"([$£€])\s?(\d+)(?:\.(\d\d))?\b", _money, text)
    text = re.sub(r"\b(\d{1,2}):(\d\d)\b", _clock, text)
    text = re.sub(r"(\d+)\s?[⁄/]\s?(\d+)", _fraction, text)
    text = re.sub(r"\b(\d+)'?s\b", _plural_number, text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: f" {ordinal_words(int(m.group(1)))} ", text)
    text = re.sub(r"(\d+)\.(\d+)", _decimal, text)
    text = re.sub(r"\d+", lambda m: f" {_integer(m.group(0))} ", text)
    for symbol, words in SYMBOLS.items():
        text = text.replace(symbol, words)
    return re.sub(r"\s+([,.!?;:])", r"\1", " ".join(text.split()))


def normalize_transcript(text: str) -> str:
    """Lowercase words over ALPHABET: numbers and symbols spelled out, the rest dropped."""
    text = unicodedata.normalize("NFKD", spoken_form(text).lower())
    text = "".join(c for c in text if not unicodedata.combining(c))      # café -> cafe
    text = re.sub(r"[’‘`´]", "'", text)
    text = re.sub(r"[^a-z']+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)                  # apostrophes only inside words
    return " ".join(text.split())
