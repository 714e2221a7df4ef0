"""The Python API on a tiny checkpoint: every task's call, its output types and input checks."""
from __future__ import annotations


import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from fm_multi import InputError, Pipeline
from helpers import CLASSES, make_checkpoint


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return Pipeline.from_pretrained(make_checkpoint(tmp_path_factory.mktemp("c") / "ckpt"), device="cpu")


def test_chat_streams_and_respects_max_new_tokens(pipe):
    msgs = [{"role": "user", "content": "what is two plus three?"}]
    chunks = list(pipe.chat_stream(msgs, max_new_tokens=5, temperature=0.0, repetition_penalty=1.0))
    assert 1 <= len(chunks) <= 5
    assert all(chunks[i + 1].startswith(chunks[i][: len(chunks[i]) - 1]) for i in range(len(chunks) - 1))
    assert pipe.chat(msgs, max_new_tokens=5, temperature=0.0, repetition_penalty=1.0) == chunks[-1]


def test_chat_rejects_bad_messages(pipe):
    with pytest.raises(InputError, match="empty"):
        pipe.chat([{"role": "user", "content": "  \x00 "}])
    with pytest.raises(InputError, match="role"):
        pipe.chat([{"role": "wizard", "content": "hi"}])
    with pytest.raises(InputError, match="characters"):
        pipe.chat([{"role": "user", "content": "x" * 100_000}])
    with pytest.raises(InputError, match="max_new_tokens"):
        pipe.chat([{"role": "user", "content": "hi"}], max_new_tokens=10_000)


def test_summarize_returns_text(pipe):
    assert isinstance(pipe.summarize("the quick brown fox jumps over the lazy dog", max_new_tokens=4), str)
    assert isinstance(pipe.summarize("the quick brown fox jumps over the lazy dog", max_new_tokens=4,
                                     copy_bias=0.0), str)
    with pytest.raises(InputError, match="copy_bias"):
        pipe.summarize("the quick brown fox", copy_bias=-1.0)


def test_summary_beam_search_reports_the_models_probabilities(pipe):
    text = "the quick brown fox jumps over the lazy dog"
    summary, probs = pipe.summarize_detailed(text, max_new_tokens=6)            # the default: beam search
    assert 1 <= len(probs) <= 6 and all(0 < p <= 1 for _, p in probs)
    assert "".join(t for t, _ in probs).strip() == summary
    greedy, _ = pipe.summarize_detailed(text, max_new_tokens=6, num_beams=1)
    assert isinstance(greedy, str)
    assert isinstance(pipe.summarize(text, max_new_tokens=6, temperature=0.8, seed=1), str)  # sampling: one beam
    with pytest.raises(InputError, match="beam search is deterministic"):
        pipe.summarize(text, temperature=0.8, num_beams=4)
    with pytest.raises(InputError, match="num_beams"):
        pipe.summarize(text, num_beams=0)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "1"])
def test_classify_any_image_mode(pipe, mode):
    img = Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).convert(mode)
    top = pipe.classify(img, top_k=3)
    assert len(top) == 3 and {name for name, _ in top} <= set(CLASSES)
    assert all(0 <= p <= 1 for _, p in top) and top[0][1] >= top[1][1]


def test_detect_boxes_are_in_input_pixels(pipe):
    img = Image.new("RGB", (300, 120), "white")
    dets = pipe.detect(img, threshold=0.0)
    assert dets, "threshold 0 keeps every patch after NMS"
    for d in dets:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 <= x1 <= 300 and 0 <= y0 <= y1 <= 120
        assert d["label"] in CLASSES and 0 <= d["score"] <= 1


def test_bad_images_are_refused(pipe):
    with pytest.raises(InputError, match="not an image"):
        pipe.classify(b"")
    with pytest.raises(InputError, match="not an image"):
        pipe.detect(b"\x89PNG garbage")
    with pytest.raises(InputError, match="no image"):
        pipe.classify(None)


def test_transcribe_any_rate_and_channels(pipe, tmp_path):
    rng = np.random.default_rng(0)
    stereo = (rng.standard_normal((44_100, 2)) * 0.1).astype(np.float32)
    path = tmp_path / "a.flac"
    sf.write(path, stereo, 44_100)
    assert isinstance(pipe.transcribe(str(path)), str)
    assert isinstance(pipe.transcribe((8_000, (stereo[:8000] * 32767).astype(np.int16))), str)
    out = pipe.transcribe_detailed(stereo[:, 0], sample_rate=44_100)
    assert abs(out["seconds"] - 1.0) < 0.01 and not out["truncated"]


def test_bad_audio_is_refused_or_cut(pipe, tmp_path):
    with pytest.raises(InputError, match="not audio"):
        (tmp_path / "x.wav").write_bytes(b"RIFF1234garbage")
        pipe.transcribe(str(tmp_path / "x.wav"))
    with pytest.raises(InputError, match="long"):
        pipe.transcribe((16_000, np.zeros(800, dtype=np.float32)))
    long = pipe.transcribe_detailed((16_000, np.zeros(16_000 * 61, dtype=np.float32)))
    assert long["truncated"] and long["seconds"] == pytest.approx(60.0)


def test_classify_explanation_is_an_image_of_the_input_size(pipe):
    img = Image.new("RGB", (90, 60), "white")
    overlay, top = pipe.explain_classify(img)
    assert overlay.size == (90, 60) and len(top) == min(5, len(CLASSES))


def test_saliency_maps_are_patch_grids_in_unit_range(pipe):
    from fm_multi import explain
    from fm_multi.preprocess import image_to_tensor

    c = pipe.config
    img = Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8))
    sal = explain.classify_saliency(pipe.model, image_to_tensor(img, c.image_size)[None], 0)
    g = c.image_size // c.patch_size
    assert sal.shape == (g, g) and float(sal.max()) == pytest.approx(1.0) and float(sal.min()) >= 0
    dets = pipe.explain_detect(img, threshold=0.0)
    assert dets and all(d["heatmap"].size == (64, 64) for d in dets)
    assert all(set(d) == {"label", "score", "box", "heatmap"} for d in dets)


def test_word_confidences_group_ctc_characters():
    from fm_multi.explain import word_confidences

    align = [{"char": c, "frame": i, "prob": p} for i, (c, p) in enumerate(zip("hi yo", [0.9, 0.7, 1, 0.5, 0.3]))]
    words = word_confidences(align)
    assert [w["word"] for w in words] == ["hi", "yo"]
    assert words[0]["min"] == pytest.approx(0.7) and words[1]["mean"] == pytest.approx(0.4)
