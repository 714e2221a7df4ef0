"""Tests of the offline data build (fm_multi.data) on one small build per session.

Standard readers (torchvision ImageFolder / CocoDetection, pycocotools, soundfile, tokenizers)
must read every part; splits must not overlap; the same seed must give the same bytes; and the
loaders must reject malformed user data with the file and line.
"""

import argparse
import filecmp
import json
import pickle
import re
from pathlib import Path

import pytest

from fm_multi.data import build, chat, classify, images, loaders, speech
from fm_multi.data.speech import normalize_transcript
from fm_multi.data.tokenizer import SPECIAL_TOKENS, train_tokenizer

UNICODE_SAMPLES = ["Hello, world!", "naïve café — déjà vu", "日本語のテキスト", "emoji 🐶🍎🚗 and ZWJ 👩‍🔬",
                   "  leading spaces\tand\ttabs\n\nnew lines  ", "<|user|> literal specials <|end|>", ""]


def need(data: Path, part: str) -> Path:
    if not (data / part).exists():
        pytest.skip(f"{part} was not built (its sources are not installed)")
    return data / part


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- images -------------------------------------------------------------------------------------

def test_val_quota_rotates_so_every_training_style_is_measured():
    styles = [f"style{i}" for i in range(13)]
    assert classify._quota(210, styles) == {s: 16 + (i < 2) for i, s in enumerate(styles)}  # train: as before
    totals = dict.fromkeys(styles, 0)
    for c in range(13):                       # 13 classes drawn in 13 styles, 10 val pictures each
        quota = classify._quota(10, styles, first_extra=c)
        assert sum(quota.values()) == 10 and set(quota.values()) == {0, 1}
        for s, n in quota.items():
            totals[s] += n
    assert set(totals.values()) == {10}


def test_imagefolder_reads_classify(small_data):
    from torchvision.datasets import ImageFolder
    root = need(small_data, "classify")
    labels = loaders.load_labels(small_data)
    for split in ("train", "val"):
        folder = ImageFolder(root / split)
        assert folder.classes == labels["classify"]
        image, target = folder[0]
        assert image.size == (128, 128) and image.mode == "RGB" and 0 <= target < len(labels["classify"])
    train = loaders.ClassifyDataset(small_data, "train")
    val = loaders.ClassifyDataset(small_data, "val")
    assert len(set(train.styles)) >= 3, "train needs at least three art styles"
    assert "openmoji" in set(val.styles) and "openmoji" not in set(train.styles), "held-out style leaked"
    assert set(train.styles) <= set(val.styles)
    card = (root / "DATASET_CARD.md").read_text()
    assert all(images.STYLE_SOURCES[s] in card for s in set(val.styles)), "a style's licence is not in the card"
    assert set(train.targets) == set(val.targets) == set(range(len(labels["classify"])))
    meta = read_jsonl(root / "meta_val.jsonl")
    assert {r["background"] for r in meta} <= {"photo", "texture", "gradient", "noise"}


def _vector_packages(cache: Path) -> None:
    """Stand-ins for five npm emoji packages: a red dog in Twemoji, a blue one in EmojiOne, a green hot dog
    in Firefox OS Emoji, a black ring of a dog in EmojiOne Monotone and a square one in Fluent high contrast,
    filled with currentColor."""
    from fm_multi.data import deps
    tw = cache / f"twemoji-{deps.NPM_PACKAGES['twemoji'][1]}" / "package"
    tw.mkdir(parents=True)
    (tw / "1f415.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">'
                                  '<rect x="9" y="0" width="18" height="36" fill="#ff0000"/></svg>')
    eo = cache / f"emojione-{deps.NPM_PACKAGES['emojione'][1]}" / "package"
    eo.mkdir(parents=True)
    (eo / "icons.json").write_text(json.dumps({
        "width": 64, "height": 64, "aliases": {"hound": {"parent": "dog"}},
        "icons": {"dog": {"body": '<rect x="0" y="16" width="64" height="32" fill="#0000ff"/>'}}}))
    fx = cache / f"fxemoji-{deps.NPM_PACKAGES['fxemoji'][1]}" / "package"   # names run together
    fx.mkdir(parents=True)
    (fx / "icons.json").write_text(json.dumps({
        "width": 32, "height": 32, "icons": {"hotdog": {"body": '<circle cx="16" cy="16" r="16" fill="#00ff00"/>'}}}))
    mono = cache / f"monotone-{deps.NPM_PACKAGES['monotone'][1]}" / "package"   # black-only: a ring
    mono.mkdir(parents=True)
    (mono / "icons.json").write_text(json.dumps({
        "width": 64, "height": 64, "icons": {"dog": {
            "body": '<circle cx="32" cy="32" r="28" fill="none" stroke="#000" stroke-width="6"/>'}}}))
    hc = cache / f"contrast-{deps.NPM_PACKAGES['contrast'][1]}" / "package"   # drawn in currentColor
    hc.mkdir(parents=True)
    (hc / "icons.json").write_text(json.dumps({
        "width": 32, "height": 32, "icons": {"dog": {
            "body": '<g fill="currentColor"><rect x="2" y="2" width="28" height="28"/></g>'}}}))


def test_vector_styles_render_from_their_packages(tmp_path, monkeypatch, request):
    pytest.importorskip("cairosvg")
    import numpy as np

    from fm_multi.data import deps
    request.addfinalizer(images._vector_cutout.cache_clear)   # no stand-in pictures left for later builds
    _vector_packages(tmp_path)
    monkeypatch.setattr(deps, "NPM_CACHE", tmp_path)
    # Twemoji by code point (the U+FE0F selector dropped), EmojiOne by hyphenated name or alias
    assert images.vector_svg("twemoji", "dog", "\U0001F415\ufe0f") is not None
    assert images.vector_svg("twemoji", "cat", "\U0001F408") is None
    assert images.vector_svg("emojione", "hound", "?") == images.vector_svg("emojione", "dog", "?")
    assert images.vector_svg("emojione", "cat", "\U0001F408") is None
    red = images.render_vector("twemoji", "dog", "\U0001F415")
    blue = images.render_vector("emojione", "dog", "\U0001F415")
    # cropped to the drawn shape: a 1:2 red bar and a 2:1 blue bar, opaque, about GLYPH_SIZE tall/wide
    assert red.mode == "RGBA" and abs(red.height - 2 * red.width) <= 2 and red.height == images.VECTOR_SIZE
    assert abs(blue.width - 2 * blue.height) <= 2
    r, b = np.asarray(red), np.asarray(blue)
    assert (r[..., 3] == 255).mean() > 0.95 and r[..., 0].mean() > 250 and r[..., 2].mean() < 5
    assert b[..., 2].mean() > 250 and b[..., 0].mean() < 5
    # Firefox OS Emoji runs the name together; a black-only style becomes ink on an opaque paper cut-out
    assert images.vector_svg("fxemoji", "hot dog", "\U0001F32D") is not None
    assert images.vector_svg("fxemoji", "dog", "\U0001F415") is None
    ring = np.asarray(images.render_vector("monotone", "dog", "\U0001F415"))
    middle = ring[ring.shape[0] // 2, ring.shape[1] // 2]
    assert middle[3] == 255 and middle[0] == 255, "the inside of the ring is paper, not a hole"
    assert ring[ring.shape[0] // 2, 2, 0] < 60, "the ring itself is ink"
    square = np.asarray(images.render_vector("contrast", "dog", "\U0001F415"))
    assert square[..., 3].min() == 255 and square[..., 0].max() < 60, "currentColor draws ink"
    # an SVG cairo cannot draw (it runs out of memory on a few filters) counts as a missing picture
    import cairosvg

    def out_of_memory(**kwargs):
        raise MemoryError("cairo returned CAIRO_STATUS_NO_MEMORY")
    with monkeypatch.context() as m:
        m.setattr(cairosvg, "svg2png", out_of_memory)
        assert images.render_vector("fxemoji", "hot dog", "\U0001F32D") is None
    # a class drawn in the vector styles gets them as training styles; missing packages drop them
    monkeypatch.setattr(images, "_emoji_table", lambda: {"dog": type("E", (), {"char": "\U0001F415"})()})
    images._vector_cutout.cache_clear()
    assert images.train_styles("dog", {}) == ["noto", "symbola", "twemoji", "emojione", "monotone",
                                                "contrast"]
    monkeypatch.setattr(deps, "NPM_CACHE", tmp_path / "elsewhere")
    images._vector_cutout.cache_clear()        # the pictures are cached per class; the packages changed
    assert images.train_styles("dog", {"dog": ["stamp.png"]}) == ["noto", "symbola", "tuxpaint"]


def test_npm_package_is_checked_before_it_is_unpacked(tmp_path, monkeypatch, capsys):
    import hashlib
    import tarfile

    from fm_multi.data import deps
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "1f415.svg").write_text("<svg/>")
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "package", arcname="package")
    good = hashlib.sha256(tgz.read_bytes()).hexdigest()
    with pytest.raises(RuntimeError, match="SHA-256"):
        deps.fetch_npm_package(tgz.as_uri(), "0" * 64, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    dest = deps.fetch_npm_package(tgz.as_uri(), good, tmp_path / "good")
    assert (dest / "package" / "1f415.svg").read_text() == "<svg/>"
    # an unreachable registry costs the optional styles, with a message, not the whole `data deps`
    monkeypatch.setattr(deps, "NPM_CACHE", tmp_path / "cache")
    monkeypatch.setattr(deps, "NPM_REGISTRY", (tmp_path / "no-registry").as_uri())
    deps.fetch_npm_styles()
    out = capsys.readouterr().out
    assert out.count("could not fetch") == len(deps.NPM_PACKAGES) and not (tmp_path / "cache").exists()


def test_coco_reads_detect(small_data):
    from pycocotools.coco import COCO
    from torchvision.datasets import CocoDetection
    root = need(small_data, "detect")
    names = loaders.load_labels(small_data)["detect"]
    for split in ("train", "val"):
        coco = COCO(str(root / split / "annotations.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == names
        assert coco.getCatIds() == list(range(1, len(names) + 1))
        for img in coco.loadImgs(coco.getImgIds()):
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert 1 <= len(anns) <= 8
            for a in anns:
                x, y, w, h = a["bbox"]
                assert w > 0 and h > 0 and x >= 0 and y >= 0
                assert x + w <= img["width"] and y + h <= img["height"]
        image, anns = CocoDetection(str(root / split / "images"), str(root / split / "annotations.json"))[0]
        assert image.size == (256, 256) and anns
    ds = loaders.DetectDataset(small_data, "val")
    image, target = ds[0]
    assert target["boxes"].shape == (len(target["labels"]), 4)
    assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all() and target["boxes"].max() <= 256
    assert target["labels"].max() < len(names)


# ---- speech -------------------------------------------------------------------------------------

def test_speech_wavs_match_manifest(small_data):
    import soundfile as sf
    root = need(small_data, "speech")
    heldout_speakers = set()
    for split in ("train", "val"):
        rows = read_jsonl(root / f"{split}.jsonl")
        assert rows
        for r in rows:
            info = sf.info(str(root / r["audio"]))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert abs(info.frames / 16000 - r["duration"]) < 1e-3 and r["duration"] <= 8.0
            assert r["text"] and normalize_transcript(r["text"]) == r["text"]
            assert 3 <= len(r["text"].split()) <= 30
        if split == "train":
            assert not any(r["heldout_voice"] for r in rows)
            train_speakers, train_texts = {r["speaker"] for r in rows}, {r["text"] for r in rows}
        else:
            assert {r["heldout_voice"] for r in rows} == {True, False}
            heldout_speakers = {r["speaker"] for r in rows if r["heldout_voice"]}
            assert not train_texts & {r["text"] for r in rows}, "a val sentence is also in train"
    assert heldout_speakers and not heldout_speakers & train_speakers
    # the second readings: training sentences, each read once more, by a voice found nowhere else
    train = read_jsonl(root / "train.jsonl")
    again = [r for r in train if r["speaker"] in speech.REREAD_VOICES]
    first = [r for r in train if r["speaker"] not in speech.REREAD_VOICES]
    assert again and train[-len(again):] == again, "second readings come after the first ones"
    assert len({r["text"] for r in again}) == len(again) and {r["text"] for r in again} <= {r["text"] for r in first}
    assert not {v for _, v, _ in speech.REREAD_VOICES.values()} & {v for _, v, _ in speech.HELDOUT_VOICES.values()}
    assert not any("scotland" in v or v.endswith("+f2") for _, v, _ in speech.REREAD_VOICES.values())
    item = loaders.SpeechDataset(small_data, "val")[0]
    assert item["audio"].dtype.name == "float32" and item["audio"].ndim == 1


def test_every_voice_speaks(tmp_path):
    """Each engine/voice the build names reads a sentence: a voice package missing or renamed fails here,
    not forty minutes into a full build."""
    from fm_multi.data import deps
    if deps.missing("speech"):
        pytest.skip(f"speech sources missing: {deps.missing('speech')}")
    clips = [speech.Clip("train", i, "the cat sat on the mat", "the cat sat on the mat", name, False, "test")
             for i, name in enumerate(speech.ALL_VOICES)]
    for clip, path in zip(clips, speech._synthesize(clips, tmp_path)):
        audio = speech._sox(path, {})
        assert 0.5 < len(audio) / speech.SAMPLE_RATE < 4, clip.speaker
        assert abs(audio).max() > 0.05, f"{clip.speaker} is silent"


@pytest.mark.parametrize("raw, expected", [
    ("It costs $3.50!", "it costs three dollars and fifty cents"),
    ("Meet me at 7:05, OK?", "meet me at seven oh five ok"),
    ("She came 21st of 1,200 runners.", "she came twenty first of one thousand two hundred runners"),
    ("50% & more — café déjà-vu", "fifty percent and more cafe deja vu"),
    ("Don't 'quote' me", "don't quote me"),
    ("  ", ""),
])
def test_normalize_transcript(raw, expected):
    assert normalize_transcript(raw) == expected
    assert set(expected) <= set(" abcdefghijklmnopqrstuvwxyz'")
    assert normalize_transcript(expected) == expected


# ---- text and tokenizer -------------------------------------------------------------------------

def test_tokenizer_file_round_trips(small_data):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(need(small_data, "tokenizer") / "tokenizer.json"))
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.get_vocab_size() <= 2048
    for text in UNICODE_SAMPLES:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_train_tokenizer_in_memory():
    tok = train_tokenizer(["the cat sat on the mat"] * 50 + UNICODE_SAMPLES, vocab_size=300)
    assert [tok.id_to_token(i) for i in range(len(SPECIAL_TOKENS))] == SPECIAL_TOKENS
    for text in UNICODE_SAMPLES:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_tokenizer_reads_numbers_digit_by_digit():
    tok = train_tokenizer(["pay 1995 or 2026 by 12:30, room 404"] * 100, vocab_size=300)
    pieces = [tok.decode([i]) for i in tok.encode("What is 895 + 1234? 2129").ids]
    assert [p for p in pieces if p.strip().isdigit()] == list("89512342129")
    assert not any(len(t.lstrip("Ġ")) > 1 and t.lstrip("Ġ").isdigit() for t in tok.get_vocab())
    assert tok.decode(tok.encode("v2.0 costs 1,250 $").ids) == "v2.0 costs 1,250 $"


def test_summarize_and_chat_splits(small_data):
    text = need(small_data, "text")
    summ = {s: loaders.SummarizeDataset(small_data, s) for s in ("train", "val")}
    assert len(summ["train"]) and len(summ["val"])
    assert all(r["source"] in ("debian", "man") for r in summ["train"].rows)
    assert not {r["name"] for r in summ["train"].rows} & {r["name"] for r in summ["val"].rows}
    assert not {r["document"] for r in summ["train"].rows} & {r["document"] for r in summ["val"].rows}
    chat = {s: loaders.ChatDataset(text, s) for s in ("train", "val")}

    def key(row):
        return json.dumps([m for m in row["messages"] if m["role"] != "system"])
    assert not {key(r) for r in chat["train"].rows} & {key(r) for r in chat["val"].rows}
    assert {r["skill"] for r in chat["train"].rows} >= {"arithmetic", "counting", "spelling", "units"}
    assert any(len(r["messages"]) > 3 for r in chat["train"].rows), "no multi-turn conversations"
    for r in chat["train"].rows:                     # checkable answers must be right
        q, a = r["messages"][-2]["content"], r["messages"][-1]["content"]
        m = re.fullmatch(r"What is (\d+) ([+*-]) (\d+)\?", q)
        if m and len(r["messages"]) <= 3:
            assert int(a) == eval(f"{m[1]} {m[2]} {m[3]}")
    assert (text / "corpus.txt").stat().st_size > 0


def test_chat_train_keeps_common_questions_and_val_never_repeats_train():
    kb = chat.Knowledge(words=["apple", "harbor", "lemon"], sentences=["the cat sat on the old mat"],
                        senses=[], packages=[], commands=[])
    train = chat.generate(kb, 0, "train", 3000)
    hello = [c for c in train if c["messages"][-1]["content"] == "Hello! How can I help you?"]
    assert len(hello) > 3 * len({chat._key(c) for c in hello}), "greetings must repeat in train"
    users = [m["content"] for c in train for m in c["messages"] if m["role"] == "user"]
    assert "Spell the word apple." in users and "Spell the word 'apple'." in users    # quotes or none
    assert any(u[0].islower() and u[-1] not in ".!?" for u in users)                 # typed casually
    small_sums = [u for u in users if re.fullmatch(r"What is \d [+*] \d\?", u)]
    assert len(small_sums) > len(set(small_sums)) > 10                               # and come up again

    val = chat.generate_distinct(kb, 0, "val", 200, {chat._key(c) for c in train})
    keys = [chat._key(c) for c in val]
    assert len(val) == 200 and len(set(keys)) == 200
    assert not set(keys) & {chat._key(c) for c in train}
    # another build that turns down slot 7's draw (say its train set holds it) changes that slot alone
    other = chat.generate_distinct(kb, 0, "val", 200, {chat._key(c) for c in train} | {keys[7]})
    assert [chat._key(c) for c in other] != keys
    assert [k for i, k in enumerate(keys) if i != 7] == [chat._key(c) for i, c in enumerate(other) if i != 7]
    extra = chat.generate(kb, 0, "train-arithmetic", 500, set(keys), skill="arithmetic")
    assert len(extra) == 500 and {c["skill"] for c in extra} == {"arithmetic"}
    assert not set(keys) & {chat._key(c) for c in extra}, "extra arithmetic must never be a val instance"
    assert len({chat._key(c) for c in extra}) < 500                                  # repeats kept
    # a question differing only in quotes, capitals or final mark is the same instance
    ask = [{"role": "user", "content": "Spell the word 'apple'."}, {"role": "assistant", "content": "a-p-p-l-e"}]
    typed = [{"role": "user", "content": "spell the word apple"}, ask[1]]
    assert chat._key({"messages": ask}) == chat._key({"messages": typed})


# ---- determinism, validation, CLI ---------------------------------------------------------------

def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def test_same_seed_same_bytes(small_data, tmp_path):
    need(small_data, "detect")
    build.build(tmp_path, small=True, tasks=["detect"], seed=0, workers=1)   # other worker count too
    assert _same_tree(small_data / "detect", tmp_path / "detect")
    build.build(tmp_path / "other", small=True, tasks=["detect"], seed=1, workers=1)
    assert not _same_tree(small_data / "detect", tmp_path / "other" / "detect")


def test_malformed_user_data_names_file_and_line(tmp_path):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    cases = {"missing key 'messages'": {"msgs": []},
             "role in": {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
             "last message must be from the assistant": {"messages": good["messages"][:1]}}
    for message, bad in cases.items():
        path = tmp_path / "chat_train.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in [good, good, bad, good]) + "\n")
        with pytest.raises(ValueError, match=f"chat_train.jsonl line 3: .*{re.escape(message)}"):
            loaders.ChatDataset(tmp_path, "train")
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match="chat_train.jsonl line 2: invalid JSON"):
        loaders.ChatDataset(path)
    (tmp_path / "val.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match="val.jsonl line 1: audio file"):
        loaders.SpeechDataset(tmp_path, "val")


def test_datasets_pickle_and_shard(small_data):
    from torch.utils.data import DistributedSampler
    need(small_data, "classify")
    for ds in (loaders.ClassifyDataset(small_data, "train"), loaders.DetectDataset(small_data, "train"),
               loaders.ChatDataset(small_data, "train")):
        clone = pickle.loads(pickle.dumps(ds))
        assert len(clone) == len(ds)
        shards = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
        assert sorted(set(shards[0]) | set(shards[1])) == list(range(len(ds)))


def test_cli_contract(capsys):
    parser = argparse.ArgumentParser()
    build.add_cli(parser.add_subparsers(required=True))
    args = parser.parse_args(["data", "build", "--out", "x", "--small", "--tasks", "chat", "detect",
                              "--seed", "3", "--workers", "1"])
    assert (args.out, args.small, args.tasks, args.seed, args.workers) == (Path("x"), True, ["chat", "detect"], 3, 1)
    assert args.func is build.run_build
    args = parser.parse_args(["data", "deps", "--dry-run"])
    args.func(args)                                   # prints the commands, runs nothing
    out = capsys.readouterr().out
    assert "apt-get install" in out and "Acquire::Languages=en" in out and "pip install" in out
