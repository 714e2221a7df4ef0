"""Speech-to-text set: sentences read by offline TTS voices, 16 kHz mono PCM16 WAV + JSONL manifest.

Voices: flite (kal, kal16, awb, slt, rms: built from recordings of real speakers), festival
(kal_diphone, ked_diphone, and the HTS voice cmu_us_slt_arctic_hts, a third kind of synthesiser) and a
minority of espeak-ng variants, which sound robotic. Two whole voices (flite_rms and one espeak
variant) never read a train sentence: val holds both clips of those held-out voices and held-out
sentences read by the trained voices, told apart by `heldout_voice`. Then some training sentences
are read a second time by twelve more espeak-ng voices (REREAD_VOICES): more voices for the same
sentences. Train clips are augmented (speed, pitch, reverberation through sox; noise and level in
numpy) with parameters drawn from the build seed; val clips are clean.
"""

import random
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from fm_multi.data.common import is_val, item_rng, parallel_map, write_card, write_jsonl
from fm_multi.data.transcript import ALPHABET, normalize_transcript, spoken_form  # noqa: F401 (re-exported)

PART = 3
SAMPLE_RATE = 16000
MAX_SECONDS = 8.0
MIN_WORDS, MAX_WORDS = 3, 14
CHUNK = 24            # clips per worker task; festival starts once per chunk (~0.2 s)
COUNTS = {"full": {"train": 24000, "val_seen": 300, "val_heldout": 300, "number_sentences": 20000, "reread": 6000},
          "small": {"train": 32, "val_seen": 4, "val_heldout": 4, "number_sentences": 400, "reread": 8}}

# speaker id -> (engine, voice, share of its split). Held-out voices only read val sentences.
TRAIN_VOICES = {
    "flite_kal": ("flite", "kal", 0.12), "flite_kal16": ("flite", "kal16", 0.10),
    "flite_awb": ("flite", "awb", 0.16), "flite_slt": ("flite", "slt", 0.10),
    "festival_kal": ("festival", "kal_diphone", 0.14), "festival_ked": ("festival", "ked_diphone", 0.14),
    "festival_slt_hts": ("festival", "cmu_us_slt_arctic_hts", 0.10),
    "espeak_en-us": ("espeak", "en-us", 0.05), "espeak_en-gb+f3": ("espeak", "en-gb+f3", 0.05),
    "espeak_en-gb-x-rp+m3": ("espeak", "en-gb-x-rp+m3", 0.04),
}
HELDOUT_VOICES = {"flite_rms": ("flite", "rms", 0.7),
                  "espeak_en-gb-scotland+f2": ("espeak", "en-gb-scotland+f2", 0.3)}
# More voices without more sentences: after the clips above, `reread` training sentences are read again
# by these espeak-ng accent+variant voices (one drawn per clip). None has the Scottish accent or the
# +f2 variant of the held-out espeak voice.
REREAD_VOICES = {f"espeak_{v}": ("espeak", v, 1 / 12) for v in (
    "en-us+m1", "en-us+f1", "en-us+m7", "en-gb+m2", "en-gb+f4", "en-gb-x-gbclan+m4", "en-gb-x-gbclan+f5",
    "en-gb-x-gbcwmd+m5", "en-gb-x-gbcwmd+f3", "en-029+m6", "en-029+f1", "en-gb-x-rp+f4")}
ALL_VOICES = {**TRAIN_VOICES, **HELDOUT_VOICES, **REREAD_VOICES}
# Engines expand these ("Dr." -> "doctor"), acronyms ("DNS") and identifiers, so the audio would
# not say the transcript's words: sentences containing them are left out.
ABBREVIATION = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Jr|Sr|Mt|Ft|Gen|Gov|Sen|Rev|Prof|Lt|Col|Capt|Sgt)\b"
                          r"|\b(vs|etc|Inc|Ltd|Co|No)\.")
UNSPEAKABLE = re.compile(r"[A-Z]{2}|[A-Za-z]\d|\d(?!(st|nd|rd|th|s)\b)[A-Za-z]|[/_\\<>{}\[\]|~^*]|\w\.\w")
SOURCE_ODDS = {"wordnet": 0.6, "definition": 0.1, "debian": 0.1, "numbers": 0.2}


@dataclass
class Clip:
    split: str
    index: int
    text: str             # normalised transcript
    spoken: str           # what the engine reads: the sentence with numbers written out
    speaker: str
    heldout_voice: bool
    source: str
    augment: dict = field(default_factory=dict)

    @property
    def audio(self) -> str:
        return f"{self.split}/{self.index:06d}.wav"


# ---- sentences ----------------------------------------------------------------------------------

def _plain(sentence: str) -> bool:
    """Whether a TTS engine will say exactly the words of the normalised text, in 3-14 words."""
    if UNSPEAKABLE.search(sentence) or ABBREVIATION.search(sentence):
        return False
    n = len(normalize_transcript(sentence).split())
    return MIN_WORDS <= n <= MAX_WORDS and all(len(w) <= 16 for w in sentence.split())


NUMBER_TEMPLATES = [
    "I bought {n} apples for ${d}.{c}.", "The meeting starts at {h}:{m}.", "There are {n} people in the room.",
    "Please turn to page {n}.", "The temperature today is {t} degrees.", "About {p}% of the votes were counted.",
    "She finished {o} in the race.", "Call extension {x} for help.", "The house was built in {y}.",
    "Add {a} and {b} to get {s}.", "The train leaves from platform {a} at {h}:{m}.", "We walked {d}.{q} kilometers.",
]


def number_sentence(r: random.Random) -> str:
    a, b = r.randint(1, 99), r.randint(1, 99)
    o = r.randint(1, 40)
    ordinal = f"{o}{'th' if 10 <= o % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(o % 10, 'th')}"
    return r.choice(NUMBER_TEMPLATES).format(
        n=r.randint(2, 5000), d=r.randint(1, 99), c=f"{r.randint(0, 99):02d}", h=r.randint(1, 12),
        m=f"{r.randint(0, 59):02d}", t=r.randint(-5, 40), p=r.randint(1, 99), o=ordinal,
        x=r.randint(100, 9999), y=r.randint(1800, 2024), a=a, b=b, s=a + b, q=r.randint(1, 9))


def sentence_pools(src, seed: int, small: bool) -> dict[str, dict[str, list[str]]]:
    """{split: {source: shuffled sentences}}; a sentence's split comes from its hash."""
    texts = {"wordnet": [e for s in src.synsets for e in s.examples],
             "definition": [s.definition for s in src.synsets if ";" not in s.definition],
             "debian": [p.synopsis for p in src.debian[0]]}
    r = random.Random(f"speech/{seed}/numbers")
    texts["numbers"] = [number_sentence(r) for _ in range(COUNTS["small" if small else "full"]["number_sentences"])]
    pools = {"train": {}, "val": {}}
    for source, items in texts.items():
        seen = set()
        for t in items:
            t = " ".join(t.split())
            key = normalize_transcript(t)
            if key in seen or not _plain(t):
                continue
            seen.add(key)
            pools["val" if is_val(key, 8) else "train"].setdefault(source, []).append(t)
    for split in pools:
        for source, items in sorted(pools[split].items()):
            random.Random(f"speech/{seed}/{split}/{source}").shuffle(items)
    return pools


def plan(pools: dict, small: bool, seed: int) -> list[Clip]:
    """Assign each clip a sentence (no sentence read twice), a voice and augmentation."""
    counts, clips = COUNTS["small" if small else "full"], []
    groups = [("train", counts["train"], TRAIN_VOICES, False),
              ("val", counts["val_seen"], TRAIN_VOICES, False),
              ("val", counts["val_heldout"], HELDOUT_VOICES, True)]
    cursor = {split: {src: 0 for src in pools[split]} for split in pools}
    next_index = {"train": 0, "val": 0}
    for split, n, voices, heldout in groups:
        r = random.Random(f"speech/{seed}/{split}/{heldout}")
        for _ in range(n):
            index, next_index[split] = next_index[split], next_index[split] + 1
            source = _next_source(r, pools[split], cursor[split])
            sentence = pools[split][source][cursor[split][source]]
            cursor[split][source] += 1
            speaker = r.choices(list(voices), weights=[v[2] for v in voices.values()])[0]
            aug = _augment_params(r) if split == "train" else {}
            clips.append(Clip(split, index, normalize_transcript(sentence), spoken_form(sentence),
                              speaker, heldout, source, aug))
    return clips


def _next_source(r: random.Random, pools: dict, cursor: dict) -> str:
    left = {s: p for s, p in SOURCE_ODDS.items() if cursor.get(s, 0) < len(pools.get(s, []))}
    if not left:
        raise ValueError("speech: ran out of distinct sentences; lower the clip counts")
    return r.choices(list(left), weights=list(left.values()))[0]


def _augment_params(r: random.Random) -> dict:
    """Per-clip augmentation, each effect applied to a share of train clips."""
    aug = {}
    if r.random() < 0.5:
        aug["speed"] = round(r.uniform(0.88, 1.12), 3)
    if r.random() < 0.3:
        aug["pitch"] = r.randint(-250, 250)              # cents
    if r.random() < 0.25:
        aug["reverb"] = [r.randint(20, 70), r.randint(30, 70), r.randint(30, 100)]
    if r.random() < 0.5:
        aug["snr_db"] = round(r.uniform(10, 35), 1)
    aug["gain"] = round(r.uniform(0.3, 0.95), 3)
    return aug


# ---- synthesis ----------------------------------------------------------------------------------

def _voice(speaker: str) -> tuple[str, str]:
    engine, voice, _ = ALL_VOICES[speaker]
    return engine, voice


def _synthesize(clips: list[Clip], tmp: Path) -> list[Path]:
    """Raw engine output (native sample rate) for each clip; festival runs once for the chunk."""
    paths, festival = [], []
    for clip in clips:
        engine, voice = _voice(clip.speaker)
        path = tmp / f"{clip.split}_{clip.index}.wav"
        paths.append(path)
        if engine == "flite":
            subprocess.run(["flite", "-voice", voice, "-t", clip.spoken, "-o", str(path)], check=True)
        elif engine == "espeak":
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), clip.spoken], check=True)
        else:
            festival.append((voice, clip.spoken, path))
    if festival:
        script = []
        for voice, text, path in sorted(festival, key=lambda f: f[0]):
            quoted = text.replace("\\", " ").replace('"', " ")
            script.append(f'(voice_{voice})(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{path}" \'riff)')
        subprocess.run(["festival", "--pipe"], input="\n".join(script).encode(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return paths


def _sox(path: Path, aug: dict) -> np.ndarray:
    """Resample to 16 kHz mono float32, applying speed / pitch / reverb when asked."""
    effects = ["channels", "1"]
    if "speed" in aug:
        effects += ["speed", str(aug["speed"])]
    if "pitch" in aug:
        effects += ["pitch", str(aug["pitch"])]
    if "reverb" in aug:
        effects += ["reverb", *map(str, aug["reverb"]), "channels", "1"]
    effects += ["rate", "-h", str(SAMPLE_RATE)]
    cmd = ["sox", "-R", str(path), "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-"]
    out = subprocess.run(cmd + effects, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype=np.float32)


def _finish(audio: np.ndarray, aug: dict, rng: np.random.Generator) -> np.ndarray:
    """Add noise at the clip's SNR and set its peak level; returns PCM16 samples."""
    audio = audio.astype(np.float64)
    if "snr_db" in aug:
        noise = rng.normal(0, 1, audio.shape)
        if rng.random() < 0.5:                          # low-passed noise sounds like a hum/rumble
            noise = np.convolve(noise, np.ones(8) / 8, mode="same")
        power = np.mean(audio ** 2) + 1e-12
        noise *= np.sqrt(power / (np.mean(noise ** 2) * 10 ** (aug["snr_db"] / 10)))
        audio = audio + noise
    audio *= aug.get("gain", 0.9) / (np.abs(audio).max() + 1e-9)
    return np.round(audio * 32767).astype(np.int16)


def _make_chunk(clips: list[Clip], seed: int, root: Path) -> list[dict | None]:
    import soundfile as sf
    rows = []
    with tempfile.TemporaryDirectory(prefix="fm_multi_tts_") as tmp:
        for clip, raw in zip(clips, _synthesize(clips, Path(tmp))):
            rng = item_rng(seed, PART, clip.split == "val", clip.index)
            pcm = _finish(_sox(raw, clip.augment), clip.augment, rng)
            duration = len(pcm) / SAMPLE_RATE
            if not 0.3 < duration <= MAX_SECONDS:
                rows.append(None)                       # too long for the encoder window: dropped
                continue
            (root / clip.audio).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / clip.audio, pcm, SAMPLE_RATE, subtype="PCM_16")
            rows.append({"audio": clip.audio, "text": clip.text, "speaker": clip.speaker,
                         "duration": round(duration, 4), "heldout_voice": clip.heldout_voice,
                         "source": clip.source, "augment": sorted(k for k in clip.augment if k != "gain")})
    return rows


def reread_plan(train_rows: list[dict], n: int, seed: int, first_index: int) -> list[Clip]:
    """n training sentences (manifest rows) to read again, each by a voice of REREAD_VOICES and with
    augmentation of its own, numbered from first_index on."""
    r = random.Random(f"speech/{seed}/extra-voices")
    picked = r.sample(train_rows, min(n, len(train_rows)))
    return [Clip("train", first_index + i, row["text"], row["text"], r.choice(list(REREAD_VOICES)), False,
                 row["source"], _augment_params(r)) for i, row in enumerate(picked)]


def _synthesize_all(clips: list[Clip], seed: int, root: Path, workers: int, desc: str) -> list[dict | None]:
    chunks = [clips[i:i + CHUNK] for i in range(0, len(clips), CHUNK)]
    return [r for chunk in parallel_map(partial(_make_chunk, seed=seed, root=root), chunks, workers,
                                        desc=desc, chunksize=1) for r in chunk]


def build(out: Path, src, small: bool, seed: int, workers: int) -> dict:
    """Write DIR/speech; returns counts for build.json."""
    root = out / "speech"
    clips = plan(sentence_pools(src, seed, small), small, seed)
    kept = [r for r in _synthesize_all(clips, seed, root, workers, "speech") if r]
    again = reread_plan([r for r in kept if r["audio"].startswith("train")],
                        COUNTS["small" if small else "full"]["reread"], seed, sum(c.split == "train" for c in clips))
    reread = [r for r in _synthesize_all(again, seed, root, workers, "speech, more voices") if r]
    dropped = len(clips) + len(again) - len(kept) - len(reread)
    kept += reread
    counts = {}
    for split in ("train", "val"):
        counts[split] = write_jsonl(root / f"{split}.jsonl", [r for r in kept if r["audio"].startswith(split)])
        counts[f"{split}_hours"] = round(sum(r["duration"] for r in kept if r["audio"].startswith(split)) / 3600, 3)
    counts["val_heldout_voice"] = sum(r["heldout_voice"] for r in kept)
    counts["dropped_too_long"] = dropped
    counts["train_reread"] = len(reread)
    counts["speakers"] = {s: sum(r["speaker"] == s for r in kept) for s in ALL_VOICES}
    _card(root, counts)
    return counts


def _card(root: Path, counts: dict) -> None:
    voices = ", ".join(f"{s} ({n})" for s, n in counts["speakers"].items())
    write_card(root / "DATASET_CARD.md", "fm_multi speech set", {
        "Contents": f"""
{counts['train']} train clips ({counts['train_hours']} h) and {counts['val']} val clips ({counts['val_hours']} h),
16 kHz mono PCM16 WAV, at most {MAX_SECONDS:.0f} s. `<split>.jsonl` rows: audio (path relative to this folder),
text (normalised: lowercase a-z, apostrophe and spaces, numbers written out; see
fm_multi.data.speech.normalize_transcript), speaker, duration (s), heldout_voice, source, augment.
Clips per voice: {voices}.""",
        "How it was made": f"""
Sentences of {MIN_WORDS}-{MAX_WORDS} words from WordNet examples and definitions, Debian package synopses and
number templates (prices, times, ordinals, years), without acronyms or abbreviations a TTS engine would
spell out. Each sentence is read once; then {counts['train_reread']} training sentences are read a second time,
each by one of {len(REREAD_VOICES)} more espeak-ng voices (accent+variant; none Scottish, none +f2). A
sentence's split comes from a hash of its text. Voices
flite_rms and espeak_en-gb-scotland+f2 appear only in val (`heldout_voice: true`, {counts['val_heldout_voice']}
clips); the other val clips are held-out sentences read by trained voices. Train clips get speed
(0.88-1.12), pitch (+-250 cents) and reverb through sox, and white or low-passed noise (10-35 dB SNR)
and a random level in numpy; val clips are clean. {counts['dropped_too_long']} clips over {MAX_SECONDS:.0f} s
were dropped.""",
        "Sources and licences": """
flite (BSD-style; its voices are from CMU ARCTIC recordings), festival and the kal/ked diphone voices
(X11-like), festival's HTS voice cmu_us_slt_arctic_hts (CMU/Edinburgh Speech Tools licence and BSD-3-clause,
both permissive; from the same CMU ARCTIC speaker as flite_slt), espeak-ng (GPL-3+); sentences from
WordNet 3.0 (WordNet licence) and Debian package descriptions. espeak-ng is a minority of the clips: it is
far less natural than the others.""",
    })
