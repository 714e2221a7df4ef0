"""Regenerate the playground's example inputs: emoji pictures, two speech clips, a text.

    python assets/examples/make_examples.py

Needs the Debian packages fonts-noto-color-emoji, flite and espeak-ng. Every file is drawn or
synthesised here, so nothing third-party is copied; LICENSES.md says what each file is.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
NOTO = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
GLYPH_SIZE = 109  # Noto Color Emoji is a bitmap font: 109 is the one size it renders at
EMOJI = {"dog": "\U0001F415", "red_apple": "\U0001F34E", "automobile": "\U0001F697"}
SPEECH = {
    "hello_world.wav": ("flite", "Hello world, this is a test."),
    "open_the_door.flac": ("espeak-ng", "Please open the door."),
}


def glyph(char: str) -> Image.Image:
    """One emoji as a tight RGBA cut-out (about 136 x 128 px)."""
    font = ImageFont.truetype(NOTO, GLYPH_SIZE)
    im = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((8, 8), char, font=font, embedded_color=True)
    return im.crop(im.getchannel("A").getbbox())


def gradient(size: tuple[int, int], top: tuple, bottom: tuple) -> Image.Image:
    """A vertical two-colour gradient, so the objects do not sit on flat white."""
    t = np.linspace(0.0, 1.0, size[1])[:, None, None]
    rows = (1 - t) * np.array(top) + t * np.array(bottom)
    return Image.fromarray(np.repeat(rows, size[0], axis=1).astype(np.uint8), "RGB")


def paste(canvas: Image.Image, cutout: Image.Image, longest: int, xy: tuple[int, int]) -> None:
    scale = longest / max(cutout.size)
    im = cutout.resize((round(cutout.width * scale), round(cutout.height * scale)), Image.LANCZOS)
    canvas.paste(im, xy, im)


def make_images() -> None:
    backgrounds = {"dog": ((198, 226, 255), (120, 170, 90)), "red_apple": ((250, 240, 210), (190, 160, 120)),
                   "automobile": ((220, 220, 230), (110, 110, 120))}
    for name, char in EMOJI.items():
        canvas = gradient((128, 128), *backgrounds[name])
        paste(canvas, glyph(char), 96, (16, 16))
        canvas.save(HERE / f"{name}.png", optimize=True)
    scene = gradient((256, 256), (190, 220, 250), (140, 180, 110))
    paste(scene, glyph(EMOJI["dog"]), 90, (12, 20))
    paste(scene, glyph(EMOJI["red_apple"]), 56, (180, 40))
    paste(scene, glyph(EMOJI["automobile"]), 120, (110, 150))
    scene.save(HERE / "scene.png", optimize=True)


def make_speech() -> None:
    for name, (engine, text) in SPEECH.items():
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "speech.wav"
            cmd = ["flite", "-voice", "kal16", "-t", text, "-o", str(wav)] if engine == "flite" else \
                  ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text]
            subprocess.run(cmd, check=True, capture_output=True)
            data, rate = sf.read(wav, dtype="int16")
        sf.write(HERE / name, data, rate)  # the suffix picks the container (wav, flac)


if __name__ == "__main__":
    make_images()
    make_speech()
