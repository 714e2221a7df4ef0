"""Model behaviour: shapes, causality, KV cache, padding, per-task overfitting, heads."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from fm_multi.engine import SamplingParams, beam_search, followers, generate, sample_next
from fm_multi.speech_lm import END, CharLM
from fm_multi.tasks import chat, classify, detect, summarize, transcribe
from fm_multi.tasks.language import TextCodec
from helpers import CLASSES, make_model, make_tokenizer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(params=["conv", "patch"])
def model(tok, request):
    return make_model(tok, vision_stem=request.param)


def test_encoder_and_head_shapes(model):
    c = model.config
    B = 3
    assert model("chat", idx=torch.randint(0, c.vocab_size, (B, 7))).shape == (B, 7, c.vocab_size)
    assert model("classify", pixels=torch.randn(B, 3, c.image_size, c.image_size)).shape == (B, len(CLASSES))
    # another image size: 2-D positions are interpolated
    assert model("classify", pixels=torch.randn(B, 3, 48, 40)).shape == (B, len(CLASSES))
    out = model("detect", pixels=torch.randn(B, 3, c.detect_image_size, c.detect_image_size))
    n = (c.detect_image_size // c.patch_size) ** 2
    assert out["logits"].shape == (B, n, len(CLASSES)) and out["boxes"].shape == (B, n, 4)
    assert (out["boxes"][..., 2:] >= out["boxes"][..., :2]).all()
    logits, lengths = model("transcribe", mel=torch.randn(B, 80, 101), mel_lengths=torch.tensor([101, 60, 9]))
    assert logits.shape == (B, 26, c.n_ctc)
    assert lengths.tolist() == [26, 15, 3]
    x, mask = model.audio(torch.randn(2, 80, 40), torch.tensor([40, 20]), model.modality[2])
    assert x.shape == (2, 10, c.d_model) and mask.sum(1).tolist() == [10, 5]


def test_both_vision_stems_give_the_same_patch_grid(tok):
    pixels = torch.randn(2, 3, 64, 48)
    conv, patch = make_model(tok, vision_stem="conv"), make_model(tok, vision_stem="patch")
    a, _ = conv.vision(pixels, conv.modality[1])
    b, _ = patch.vision(pixels, patch.modality[1])
    assert a.shape == b.shape == (2, 1 + 8 * 6, conv.config.d_model)
    # the convolutional stem sees across patch borders: changing one pixel moves more than one token
    nudged = pixels.clone()
    nudged[0, :, 8, 8] += 5  # the corner pixel shared by patches (0,0)..(1,1) neighbourhoods
    c, _ = conv.vision(nudged, conv.modality[1])
    d, _ = patch.vision(nudged, patch.modality[1])
    moved = lambda x, y: int(((x - y).abs().amax(-1) > 1e-6).sum())  # noqa: E731
    assert moved(a[:1], c[:1]) > 1 and moved(b[:1], d[:1]) == 1


def test_model_config_checks_the_stem_and_reads_older_files():
    from fm_multi.config import ModelConfig

    assert ModelConfig.from_dict({"d_model": 64, "n_head": 4}).vision_stem == "patch"  # files written before the key
    with pytest.raises(ValueError, match="vision_stem"):
        ModelConfig(vision_stem="resnet")
    with pytest.raises(ValueError, match="power-of-two"):
        ModelConfig(vision_stem="conv", patch_size=12, image_size=48, detect_image_size=96)


def test_classify_inference_averages_each_picture_with_its_mirror(model):
    model.eval()
    x = torch.randn(3, 3, model.config.image_size, model.config.image_size)
    with torch.no_grad():
        logits = classify.predict(model, x)
        plain, mirrored = model.forward_classify(x), model.forward_classify(x.flip(-1))
    assert logits.shape == plain.shape
    assert torch.allclose(logits, (plain + mirrored) / 2, atol=1e-5)
    assert torch.allclose(classify.predict(model, x.flip(-1)), logits, atol=1e-5)  # a mirror gets the same answer
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # while the head alone tells them apart


def test_classify_inference_adds_the_centre_view_and_its_mirror(model):
    import numpy as np

    from fm_multi.preprocess import image_to_tensor

    model.eval()
    S = model.config.image_size
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 60, 3), dtype=np.uint8))
    centre = classify.centre_crop(picture)
    assert centre.size == (54, 80)  # 80% of the area, same aspect: sqrt(0.8) = 0.894 of each side
    x, c = (image_to_tensor(im, S)[None] for im in (picture, centre))
    with torch.no_grad():
        logits = classify.predict(model, x, c)
        views = [model.forward_classify(v) for v in (x, c, x.flip(-1), c.flip(-1))]
    assert torch.allclose(logits, sum(views) / 4, atol=1e-5)
    assert not torch.allclose(logits, classify.predict(model, x), atol=1e-4)
    pictures = [(picture, 3), (picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 3)]
    assert "centre" not in classify.collate(pictures, S)                   # training does not read it
    batch = classify.collate(pictures, S, centre=True)
    assert batch["centre"].shape == batch["pixels"].shape == (2, 3, S, S)
    assert torch.allclose(batch["centre"][0], c[0]) and torch.allclose(batch["centre"][1], c[0].flip(-1), atol=1e-5)


def test_causality(model):
    idx = torch.randint(0, model.config.vocab_size, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % model.config.vocab_size
    a, b = model("chat", idx=idx), model("chat", idx=changed)
    torch.testing.assert_close(a[0, :8], b[0, :8])
    assert not torch.allclose(a[0, 8:], b[0, 8:])


def test_padding_does_not_leak_into_audio_tokens(model):
    mel = torch.randn(1, 80, 40)
    padded = torch.cat([mel, torch.randn(1, 80, 24) * 5], dim=2)
    a, _ = model("transcribe", mel=mel, mel_lengths=torch.tensor([40]))
    b, _ = model("transcribe", mel=padded, mel_lengths=torch.tensor([40]))
    torch.testing.assert_close(a[0], b[0, :10], atol=1e-5, rtol=1e-4)


def test_kv_cache_matches_full_recompute(model):
    torch.manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (1, 6)).tolist()[0]
    params = SamplingParams(max_new_tokens=10, temperature=0.0, repetition_penalty=1.0)
    cached = [t for t, _ in generate(model, prompt, params, stop_ids=set())]
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            seq.append(int(model("chat", idx=torch.tensor([seq]))[0, -1].argmax()))
    assert cached == seq[len(prompt):]
    # logits too, not only the argmax
    cache = model.new_kv_cache(1, 32)
    with torch.no_grad():
        step = [model.forward_text(torch.tensor([[t]]), kv_cache=cache)[0, -1] for t in seq[:10]]
        full = model("chat", idx=torch.tensor([seq[:10]]))[0]
    torch.testing.assert_close(torch.stack(step), full, atol=1e-5, rtol=1e-4)


def test_sampling_is_seeded_and_respects_limits(model):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_k=20, top_p=0.9, seed=123)
    a = [t for t, _ in generate(model, [1, 5, 6], params, stop_ids=set())]
    b = [t for t, _ in generate(model, [1, 5, 6], params, stop_ids=set())]
    assert a == b and len(a) == 8
    with pytest.raises(ValueError):
        SamplingParams(top_p=0).validate()


def test_beam_search_finds_the_likeliest_reply(model):
    """With a beam per vocabulary entry, two steps of beam search are exhaustive: the reply must be the
    pair of tokens with the highest joint log-probability, computed here without the KV cache."""
    torch.manual_seed(0)
    V, prompt = model.config.vocab_size, [1, 5, 6, 9]
    params = SamplingParams(max_new_tokens=2, temperature=0.0, repetition_penalty=1.0, num_beams=V)
    reply = beam_search(model, prompt, params, stop_ids=set())
    best = [tok for tok, _ in reply]
    with torch.no_grad():
        first = model("chat", idx=torch.tensor([prompt]))[0, -1].float().log_softmax(-1)       # (V,)
        seqs = torch.cat([torch.tensor([prompt]).expand(V, -1), torch.arange(V)[:, None]], 1)
        second = model("chat", idx=seqs)[:, -1].float().log_softmax(-1)                         # (V, V)
    joint = first[:, None] + second
    assert best == list(divmod(int(joint.argmax()), V))
    own = [first.exp()[best[0]], second[best[0]].exp()[best[1]]]   # the model's own probabilities, no cache
    assert [p for _, p in reply] == pytest.approx([float(p) for p in own], rel=1e-4)
    # fewer beams: still two tokens, and never better than the exhaustive answer
    narrow = [tok for tok, _ in beam_search(model, prompt, SamplingParams(
        max_new_tokens=2, temperature=0.0, num_beams=3, repetition_penalty=1.0), stop_ids=set())]
    assert len(narrow) == 2 and joint[narrow[0], narrow[1]] <= joint.max()
    # a stop token that is the likeliest first step ends the search with an empty reply
    stop = int(first.argmax())
    assert beam_search(model, prompt, SamplingParams(max_new_tokens=2, temperature=0.0, num_beams=1,
                                                     repetition_penalty=1.0, length_penalty=0.0), {stop}) == []
    for bad in (dict(num_beams=0), dict(num_beams=4, temperature=0.7), dict(length_penalty=-1)):
        with pytest.raises(ValueError):
            SamplingParams(**bad).validate()


def test_copy_bias_continues_a_span_of_the_source():
    logits = torch.zeros(12)
    logits[9] = 0.5                                  # the model's own favourite
    greedy = SamplingParams(temperature=0.0, repetition_penalty=1.0)
    biased = SamplingParams(temperature=0.0, repetition_penalty=1.0, copy_bias=1.0)
    follows = followers([3, 7, 8, 3, 4])             # 3 -> {4, 7}, 7 -> {8}, 8 -> {3}; (3, 7) -> {8}, (8, 3) -> {4}
    assert follows[(3,)].tolist() == [4, 7] and follows[(8, 3)].tolist() == [4] and (7, 3) not in follows
    assert sample_next(logits, greedy, [3], None, follows) == 9
    assert sample_next(logits, biased, [2, 7], None, follows) == 8
    logits[7] = 0.1
    assert sample_next(logits, biased, [3], None, follows) == 7     # of 3's followers, the likelier
    assert sample_next(logits, biased, [8, 3], None, follows) == 4  # the two-token match counts twice
    assert sample_next(logits, biased, [5], None, follows) == 9     # 5 is not in the source: no bias
    assert sample_next(logits, biased, [], None, follows) == 9      # nothing generated yet
    with pytest.raises(ValueError):
        SamplingParams(copy_bias=-1).validate()


def test_summary_prompt_gives_back_its_document(tok):
    codec = TextCodec(tok)
    prompt, _ = summarize.encode_summarize(codec, "the quick brown fox")
    assert summarize.document_ids(prompt) == codec.encode("the quick brown fox")


def test_generate_with_a_strong_copy_bias_copies_the_source(model):
    V = model.config.vocab_size
    source = list(range(V))                          # every token is followed by the next id
    params = SamplingParams(max_new_tokens=6, temperature=0.0, repetition_penalty=1.0, copy_bias=1e4)
    out = [t for t, _ in generate(model, [1, 5, 6], params, stop_ids=set(), source=source)]
    assert len(out) == 6
    assert all(b == a + 1 for a, b in zip(out, out[1:]) if a < V - 1)
    plain = SamplingParams(max_new_tokens=6, temperature=0.0, repetition_penalty=1.0)
    probs = [p for _, p in generate(model, [1, 5, 6], plain, stop_ids=set(), source=source)]
    first = [p for _, p in generate(model, [1, 5, 6], params, stop_ids=set(), source=source)][0]
    assert first == pytest.approx(probs[0])          # the reported probability is the model's own


def _images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def _overfit(model, loss_fn, batch, steps=60, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        loss, _ = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    return first, loss.item()


def test_each_task_overfits_one_batch_through_the_shared_backbone(model, tok):
    codec = TextCodec(tok)
    c = model.config
    batches = {
        "chat": (chat.loss, chat.collate([{"messages": [{"role": "user", "content": "what is two plus three?"},
                                                        {"role": "assistant", "content": "five"}]}], codec, 64)),
        "summarize": (summarize.loss, summarize.collate(
            [{"document": "the quick brown fox jumps over the lazy dog", "summary": "a fox jumps"}], codec, 64)),
        "classify": (classify.loss, classify.collate(list(zip(_images(4, 40), [0, 1, 2, 3])), c.image_size)),
        "detect": (detect.loss, detect.collate(
            [(img, {"boxes": [[4, 4, 30, 30], [40, 10, 70, 44]], "labels": [1, 3]}) for img in _images(2, 80)],
            c.detect_image_size)),
        "transcribe": (transcribe.loss, transcribe.collate(
            [{"audio": torch.randn(8000).numpy() * 0.1, "text": "a dog"},
             {"audio": torch.randn(6000).numpy() * 0.1, "text": "red"}])),
    }
    backbone_before = [p.detach().clone() for p in model.backbone.parameters()]
    for task, (loss_fn, batch) in batches.items():
        # detection's loss halves in about 60 steps, close enough to that count that the CPU's thread count
        # (the order of float sums) decided the outcome: 100 steps leave a clear margin
        first, last = _overfit(model, loss_fn, batch, steps=100 if task == "detect" else 60)
        assert last < 0.5 * first, f"{task}: loss {first:.3f} -> {last:.3f}"
    assert any(not torch.equal(a, b) for a, b in zip(backbone_before, model.backbone.parameters()))


def test_detection_assignment():
    centres = torch.tensor([[(x + 0.5) / 4, (y + 0.5) / 4] for y in range(4) for x in range(4)])
    assert (detect.assign(centres, torch.zeros(0, 4), 4) == -1).all()
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.45, 0.45]])  # big box, tiny box inside it
    idx = detect.assign(centres, boxes, 4)
    assert (idx == 1).sum() >= 1, "the tiny box must own at least the patch holding its centre"
    assert (idx == 0).sum() >= 1


def test_detection_inference_sees_a_mirror_image_as_the_mirror_of_its_answer(model):
    model.eval()
    c = model.config
    x = torch.randn(2, 3, c.detect_image_size, c.detect_image_size)
    g = c.detect_image_size // c.patch_size
    with torch.no_grad():
        out, flipped = detect.predict(model, x), detect.predict(model, x.flip(-1))
        plain = model.forward_detect(x)
    grid = lambda t: t.view(2, g, g, -1)  # noqa: E731
    # the mirror's patch grid is this one's read right to left, and its boxes are these with x reflected
    torch.testing.assert_close(grid(flipped["logits"]).flip(2), grid(out["logits"]), atol=1e-5, rtol=0)
    back = grid(flipped["boxes"]).flip(2)
    torch.testing.assert_close(torch.stack([1 - back[..., 2], back[..., 1], 1 - back[..., 0], back[..., 3]], -1),
                               grid(out["boxes"]), atol=1e-5, rtol=0)
    assert out["logits"].shape == plain["logits"].shape and out["boxes"].shape == plain["boxes"].shape
    assert not torch.allclose(out["logits"], plain["logits"].float(), atol=1e-4)  # both views counted
    assert (out["boxes"][..., 2:] >= out["boxes"][..., :2]).all()


def test_detection_decode_scales_to_input_pixels():
    out = {"logits": torch.full((1, 4, 2), -10.0), "boxes": torch.tensor([[[0.1, 0.2, 0.5, 0.6]] * 4])}
    out["logits"][0, 1, 1] = 5.0
    dets = detect.decode(out, 0, width=200, height=100, labels=["a", "b"], threshold=0.5)
    assert len(dets) == 1 and dets[0]["label"] == "b"
    assert dets[0]["box"] == [20.0, 20.0, 100.0, 60.0]


def test_detection_second_look_takes_the_class_both_heads_rate_highest():
    logit = lambda p: torch.logit(torch.tensor(p)).item()
    out = {"logits": torch.full((1, 4, 3), -10.0),
           "boxes": torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.02, 0.0, 0.52, 0.5],    # two views of one object
                                   [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.2, 0.7]]])}
    out["logits"][0, 0, :2] = torch.tensor([logit(0.6), logit(0.4)])   # detector: "a" 0.6, "b" 0.4
    out["logits"][0, 1, 1] = logit(0.5)                                # detector: "b" 0.5
    out["logits"][0, 2, 2] = logit(0.9)                                # detector: "c" 0.9
    out["logits"][0, 3, 0] = logit(0.35)                               # detector: "a" 0.35
    image = Image.new("RGB", (100, 100), "white")
    image.paste((255, 0, 0), (0, 0, 50, 50))                           # red top-left: the classifier says "b"
    seen = []

    def classify(crops):
        seen.append(crops)
        red = crops[:, 0].mean((1, 2)) > crops[:, 1].mean((1, 2)) + 0.5
        return torch.where(red[:, None], torch.tensor([0.1, 0.9, 0.0]), torch.tensor([0.2, 0.0, 0.8]))

    dets = detect.decode_with_crops(out, 0, image, ["a", "b", "c"], classify, crop_size=16, threshold=0.3)
    assert seen[0].shape == (4, 3, 16, 16)
    # the first two boxes both become "b"; the second, sqrt(0.5 * 0.9) = 0.67, suppresses the first, 0.6
    assert [d["label"] for d in dets] == ["c", "b"]
    assert dets[0]["score"] == pytest.approx((0.9 * 0.8) ** 0.5, abs=1e-3)
    assert dets[1]["score"] == pytest.approx((0.5 * 0.9) ** 0.5, abs=1e-3)
    assert dets[1]["box"] == [2.0, 0.0, 52.0, 50.0]
    # the last box scores sqrt(0.35 * 0.2) = 0.26 < 0.3 after its second look and is dropped
    assert detect.decode_with_crops(out, 0, image, ["a", "b", "c"], classify, 16, threshold=0.95) == []
    # below the slider's default, the first box's runner-up, "a" at sqrt(0.6 * 0.1) = 0.245, is listed too,
    # on the same box; with one class per box its "b" was suppressed and it was gone
    one = detect.decode_with_crops(out, 0, image, ["a", "b", "c"], classify, 16, threshold=0.2, classes_per_box=1)
    two = detect.decode_with_crops(out, 0, image, ["a", "b", "c"], classify, 16, threshold=0.2, classes_per_box=2)
    named = lambda dets: [(d["label"], d["box"]) for d in dets]
    assert named(two) == named(one) + [("a", [0.0, 0.0, 50.0, 50.0])]
    assert two[-1]["score"] == pytest.approx((0.6 * 0.1) ** 0.5, abs=1e-3)


def test_detection_crops_widen_boxes_within_the_picture():
    image = Image.new("RGB", (100, 50), (0, 0, 255))
    image.paste((255, 0, 0), (10, 10, 30, 30))
    inside, edge = detect.crops(image, [[10.0, 10.0, 30.0, 30.0], [90.0, 40.0, 100.0, 50.0]], size=20, margin=0.25)
    assert inside.shape == edge.shape == (3, 20, 20)
    assert inside[0, 10, 10] > inside[2, 10, 10] and inside[2, 0, 0] > inside[0, 0, 0]  # red middle, blue border
    assert torch.isfinite(edge).all()


def test_ctc_greedy_decode_collapses_repeats_and_blanks():
    ids = [0, 3, 3, 0, 3, 1, 4]  # blank b b blank b space c
    logits = torch.full((len(ids), 29), -5.0)
    logits[torch.arange(len(ids)), torch.tensor(ids)] = 5.0
    text, align = transcribe.greedy_decode(logits, len(ids))
    assert text == "bb c"
    assert [a["frame"] for a in align] == [1, 4, 5, 6]
    assert transcribe.encode_text("Hi,  BOB's!") == transcribe.encode_text("hi bob's")
    assert transcribe.encode_text("ab c'") == [2, 3, 1, 4, 28]


def _frames(*rows: dict) -> torch.Tensor:
    """CTC logits, one frame per {symbol: probability} (the rest shared out), as log-probabilities."""
    from fm_multi.config import CTC_ALPHABET
    out = torch.full((len(rows), len(CTC_ALPHABET)), 1e-6)
    for t, row in enumerate(rows):
        for sym, p in row.items():
            out[t, 0 if sym == "_" else CTC_ALPHABET.index(sym)] = p
    return (out / out.sum(-1, keepdim=True)).log()


def test_speech_lm_is_a_distribution_that_learns_spellings(tmp_path):
    from fm_multi.config import CTC_ALPHABET
    lm = CharLM.fit(["the cat sat", "the cat ran", "a cat"], order=4)
    symbols = CTC_ALPHABET[1:] + [END]
    for history in ("", "the c", "zzz q", "a cat"):
        assert sum(torch.tensor(lm.logp(history, c)).exp().item() for c in symbols) == pytest.approx(1.0, abs=1e-6)
    assert lm.logp("the c", "a") > lm.logp("the c", "o") and lm.logp("a cat", END) > lm.logp("a cat", "s")
    again = CharLM.load(lm.save(tmp_path / "lm.json.gz"))
    assert again.order == 4 and again.logp("the ca", "t") == lm.logp("the ca", "t")
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.json.gz is not a speech language model"):
        CharLM.load(tmp_path / "bad.json.gz")


def test_ctc_beam_search_without_the_language_model_reads_what_greedy_reads():
    lm = CharLM.fit(["unrelated words"], order=3)
    logits = _frames({"_": 0.9}, {"b": 0.8}, {"b": 0.7}, {"_": 0.9}, {"b": 0.8}, {" ": 0.9}, {"c": 0.95}, {"_": 0.9})
    greedy, greedy_align = transcribe.greedy_decode(logits, len(logits))
    text, align = transcribe.beam_decode(logits, len(logits), lm, lm_weight=0.0, letter_bonus=0.0)
    assert text == greedy == "bb c"  # a letter held over two frames is one letter; a blank splits a repeat
    assert [a["frame"] for a in align] == [a["frame"] for a in greedy_align] == [1, 4, 5, 6]


def test_ctc_beam_search_lets_the_language_model_settle_an_unclear_letter():
    lm = CharLM.fit(["the cat sat on the mat"] * 5 + ["a dog"], order=4)
    # the third letter sounds a little more like "d" than "t"
    logits = _frames({"c": 0.9}, {"a": 0.9}, {"d": 0.5, "t": 0.45}, {"_": 0.9})
    assert transcribe.greedy_decode(logits, len(logits))[0] == "cad"
    assert transcribe.beam_decode(logits, len(logits), lm)[0] == "cat"
    assert transcribe.decode(logits, len(logits), None)[0] == "cad"  # no model: greedy
    assert transcribe.decode(logits, len(logits), lm)[0] == "cat"
