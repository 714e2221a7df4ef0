"""Fuzzing the Python API with hypothesis: every call ends in a result or an InputError."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fm_multi import InputError, Pipeline
from helpers import make_checkpoint

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return Pipeline.from_pretrained(make_checkpoint(tmp_path_factory.mktemp("c") / "ckpt"), device="cpu")


def _ok_or_input_error(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except InputError as e:
        assert str(e) and "Traceback" not in str(e)
        return None


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_as_image(pipe, data):
    _ok_or_input_error(pipe.classify, data)
    _ok_or_input_error(pipe.detect, data)


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_random_bytes_as_audio(pipe, tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("a") / f"x{suffix}"
    path.write_bytes(data)
    _ok_or_input_error(pipe.transcribe, str(path))


@FUZZ
@given(st.text(max_size=300))
def test_random_unicode_text(pipe, text):
    out = _ok_or_input_error(pipe.chat, [{"role": "user", "content": text}], max_new_tokens=3)
    assert out is None or isinstance(out, str)
    _ok_or_input_error(pipe.summarize, text, max_new_tokens=3)


@FUZZ
@given(st.integers(1, 700), st.integers(1, 700), st.sampled_from(["RGB", "L", "RGBA", "P", "I;16", "CMYK", "1"]))
def test_images_of_any_size_and_mode(pipe, w, h, mode):
    img = Image.new(mode, (w, h))
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    assert len(pipe.classify(buf.getvalue())) >= 1
    assert isinstance(pipe.detect(img), list)


@FUZZ
@given(st.integers(1, 48_000 * 2), st.sampled_from([8_000, 16_000, 22_050, 44_100, 48_000]),
       st.sampled_from([1, 2]), st.sampled_from(["float32", "int16", "float64"]))
def test_audio_arrays_of_any_length_rate_and_channels(pipe, n, sr, channels, dtype):
    wave = np.random.default_rng(n).standard_normal((n, channels)) * 0.1
    if dtype == "int16":
        wave = (wave * 32767).astype(np.int16)
    out = _ok_or_input_error(pipe.transcribe, (sr, wave.astype(dtype) if dtype != "int16" else wave))
    assert out is None or isinstance(out, str)


def test_nan_audio_and_bomb_images_are_refused(pipe):
    with pytest.raises(InputError, match="NaN"):
        pipe.transcribe((16_000, np.full(16_000, np.nan, dtype=np.float32)))
    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, format="PNG")  # 64 Mpx, compresses to a few kB
    with pytest.raises(InputError, match="pixels"):
        pipe.classify(buf.getvalue())
