"""Emoji and stamp cut-outs, backgrounds, and compositing, shared by classification and detection.

Each class has up to fourteen looks ("styles"): Noto Color Emoji, Symbola (black outline glyphs),
Tux Paint stamps (cut-outs of real photos), Twemoji, EmojiOne (2.3 and v1), Fluent Emoji (flat, 3D and
high contrast), Noto Emoji v1, Firefox OS Emoji, Streamline Emojis and EmojiOne Monotone (vector art,
when `fm-multi data deps` has fetched their npm packages) and OpenMoji (held out of training, to measure
how the model does on an art style it never saw). A cut-out is an RGBA image cropped to its alpha; pasting
it onto a photo crop, texture, gradient or noise field gives an image whose object mask, and so whose box,
is known exactly. Everything random takes a numpy Generator so a build is reproducible, and all pixel work is
whole-array numpy or PIL, never a Python loop over pixels.
"""

import functools
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from fm_multi.data import deps, labels

VECTOR_STYLES = ("twemoji", "emojione", "fluent", "notov1",  # SVG packages from npm (deps.NPM_PACKAGES), optional
                 "fxemoji", "fluent3d", "streamline", "monotone", "contrast", "emojionev1")
# black-only glyphs ("contrast" draws in currentColor, black), drawn as ink on a paper cut-out (`_sticker`)
INK_STYLES = ("symbola", "monotone", "contrast")
HELDOUT_STYLE = "openmoji"
# Where each style comes from, under which licence and credit; the dataset cards quote these.
STYLE_SOURCES = {
    "noto": "Noto Color Emoji (OFL-1.1)",
    "symbola": "Symbola (free for any use)",
    "tuxpaint": "Tux Paint stamps (GPL-2)",
    "twemoji": 'Twemoji 15 (graphics CC BY 4.0, credit "Twemoji by Twitter, Inc and other contributors")',
    "emojione": 'EmojiOne 2.3 (CC BY 4.0, credit "Emoji One")',
    "fluent": "Fluent Emoji, flat (MIT, Microsoft Corporation)",
    "notov1": "Noto Emoji v1, the 2016 design (Apache-2.0, Google)",
    "fxemoji": "Firefox OS Emoji (Apache-2.0, Mozilla)",
    "fluent3d": "Fluent Emoji, 3D (MIT, Microsoft Corporation)",
    "streamline": 'Streamline Emojis (CC BY 4.0, credit "Streamline, webalys")',
    "monotone": 'EmojiOne Monotone (CC BY 4.0, credit "Emoji One")',
    "contrast": "Fluent Emoji, high contrast (MIT, Microsoft Corporation)",
    "emojionev1": 'EmojiOne v1, the 2014 design (CC BY-SA 4.0: pictures using it are shared alike, credit '
                  '"Emoji One")',
    "openmoji": 'OpenMoji (CC BY-SA 4.0: pictures using it are shared alike, credit "OpenMoji, the '
                'open-source emoji and icon project")',
}
GLYPH_SIZE = 109    # the only size Noto's bitmap strikes render at (~136x128 px)
VECTOR_SIZE = 128   # SVG styles are rasterised this wide, about as large as a Noto glyph
CANVAS = 160        # scratch canvas large enough for any glyph at GLYPH_SIZE
MAX_STAMP = 256     # stamps are downscaled once to this longest side; objects never need more
ALPHA_CUT = 8       # resampling leaves faint alpha fringes; below this a pixel is background
BACKGROUNDS = ("photo", "texture", "gradient", "noise")

# scikit-image sample pictures used as backgrounds. Those showing one of our classes (chelsea the
# cat, coffee, rocket, motorcycle, the cameraman, a clock) are left out so a background never
# contains an unlabelled object.
PHOTOS = ("astronaut.png", "hubble_deep_field.jpg", "moon.png", "coins.png", "page.png",
          "retina.jpg", "ihc.png", "cell.png", "text.png", "color.png")
TEXTURES = ("brick.png", "grass.png", "gravel.png")


# ---- cut-outs -----------------------------------------------------------------------------------

@functools.cache
def _font(style: str) -> ImageFont.FreeTypeFont:
    path = {"noto": deps.NOTO_FONT, "symbola": deps.SYMBOLA_FONT, "openmoji": deps.openmoji_font()}[style]
    return ImageFont.truetype(path, GLYPH_SIZE)


def _draw(style: str, char: str) -> Image.Image:
    im = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((8, 8), char, font=_font(style), embedded_color=True, fill=(0, 0, 0, 255))
    return im


@functools.cache
def _missing_glyph(style: str) -> bytes:
    # U+0378 is unassigned, so every font draws its "no glyph" symbol (or nothing) for it.
    return _draw(style, "\u0378").tobytes()


def render_glyph(style: str, char: str) -> Image.Image | None:
    """The emoji `char` in a font style as an RGBA cut-out, or None if the font lacks it."""
    im = _draw(style, char)
    box = im.getchannel("A").getbbox()
    if box is None or im.tobytes() == _missing_glyph(style):
        return None
    im = im.crop(box)
    return _sticker(im) if style in INK_STYLES else im


def vector_svg(style: str, name: str, char: str) -> str | None:
    """The SVG source of class `name` (emoji `char`) in a vector style, or None if it lacks one.

    Twemoji names its files by code point ("1f436.svg", sequences joined by "-", without the
    U+FE0F variation selector); the Iconify sets key their icons by the hyphenated CLDR name
    ("alarm-clock"), some through an alias, and Firefox OS Emoji by the name run together ("alarmclock").
    """
    folder = deps.npm_package_dir(style)
    if folder is None:
        return None
    if style == "twemoji":
        path = folder / ("-".join(f"{ord(c):x}" for c in char if c != "\ufe0f") + ".svg")
        return path.read_text(encoding="utf-8") if path.exists() else None
    icons = _iconify_set(str(folder / "icons.json"))
    key = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    keys = [icons.get("aliases", {}).get(k, {}).get("parent", k) for k in (key, key.replace("-", ""))]
    icon = next((icons["icons"][k] for k in keys if k in icons["icons"]), None)
    if icon is None:
        return None
    w, h = icon.get("width", icons.get("width", 16)), icon.get("height", icons.get("height", 16))
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}">{icon["body"]}</svg>'


@functools.cache
def _iconify_set(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def render_vector(style: str, name: str, char: str) -> Image.Image | None:
    """A vector style's picture of `name` as an RGBA cut-out at most VECTOR_SIZE px wide, or None if the
    style lacks it or cairo cannot draw it (cairo runs out of memory on a few SVG filters)."""
    import cairosvg

    svg = vector_svg(style, name, char)
    if svg is None:
        return None
    try:
        png = cairosvg.svg2png(bytestring=svg.encode("utf-8"), output_width=VECTOR_SIZE)
    except MemoryError:
        return None
    im = Image.open(io.BytesIO(png)).convert("RGBA")
    box = im.getchannel("A").point(lambda a: 255 if a >= ALPHA_CUT else 0).getbbox()
    if box is None:
        return None
    im = im.crop(box)
    return _sticker(im) if style in INK_STYLES else im


def _sticker(im: Image.Image) -> Image.Image:
    """Turn an outline glyph into an ink drawing on an opaque paper cut-out.

    Symbola, EmojiOne Monotone and Fluent high contrast draw black on transparency, which vanishes on
    dark photos. Filling the enclosed area makes a silhouette; the red channel keeps the ink level
    (0 ink .. 255 paper) so that `_colour_sticker` can pick ink and paper colours per sample.
    """
    from scipy import ndimage
    ink = np.asarray(im.getchannel("A"))
    paper = ndimage.binary_fill_holes(ink > 0)
    level = 255 - ink
    alpha = np.maximum(ink, paper.astype(np.uint8) * 255)
    return Image.fromarray(np.stack([level, level, level, alpha], axis=-1), "RGBA")


def _colour_sticker(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(im)
    t = arr[..., :1].astype(np.float32) / 255.0                 # (H, W, 1) 1 = paper
    ink = rng.uniform(0, 90, 3)
    paper = rng.uniform(170, 255, 3)
    rgb = t * paper + (1 - t) * ink
    return Image.fromarray(np.dstack([rgb.astype(np.uint8), arr[..., 3]]), "RGBA")


@functools.cache
def load_stamp(path: str) -> Image.Image:
    """A Tux Paint stamp as an RGBA cut-out, cropped to its alpha and at most MAX_STAMP px."""
    im = Image.open(path).convert("RGBA")
    box = im.getchannel("A").point(lambda a: 255 if a >= ALPHA_CUT else 0).getbbox()
    im = im.crop(box) if box else im
    im.thumbnail((MAX_STAMP, MAX_STAMP), Image.LANCZOS)
    return im


@functools.cache
def _emoji_table() -> dict:
    return labels.load_emoji()


def cutout(style: str, name: str, stamps: dict[str, list[str]], variant: int = 0) -> Image.Image:
    """The look of class `name` in `style`; `variant` picks one of a class's Tux Paint stamps."""
    if style == "tuxpaint":
        paths = stamps[name]
        return load_stamp(paths[variant % len(paths)])
    return _cached_glyph(style, name)


@functools.cache
def _vector_cutout(style: str, name: str) -> Image.Image | None:
    return render_vector(style, name, _emoji_table()[name].char)


@functools.cache
def _cached_glyph(style: str, name: str) -> Image.Image:
    im = _vector_cutout(style, name) if style in VECTOR_STYLES else render_glyph(style, _emoji_table()[name].char)
    if im is None:
        raise ValueError(f"font style {style!r} has no glyph for {name!r}")
    return im


def available_styles(name: str, stamps: dict[str, list[str]]) -> list[str]:
    """The styles class `name` can be drawn in (training styles first, then the held-out one)."""
    char = _emoji_table()[name].char
    styles = [s for s in ("noto", "symbola") if render_glyph(s, char) is not None]
    if name in stamps:
        styles.append("tuxpaint")
    styles += _vector_styles(name)
    if deps.openmoji_font() and render_glyph(HELDOUT_STYLE, char) is not None:
        styles.append(HELDOUT_STYLE)
    return styles


def style_sources(styles: list[str]) -> str:
    """The sources and licences of `styles` as markdown list items, for a dataset card."""
    return "".join(f"\n- {STYLE_SOURCES[s]}" for s in styles)


def _vector_styles(name: str) -> list[str]:
    """The vector styles that draw class `name` (each drawn once per class: `_vector_cutout` caches)."""
    return [s for s in VECTOR_STYLES if _vector_cutout(s, name) is not None]


def train_styles(name: str, stamps: dict[str, list[str]]) -> list[str]:
    """The training styles class `name` is drawn in (select_classes made sure of Noto and Symbola)."""
    return ["noto", "symbola"] + (["tuxpaint"] if name in stamps else []) + _vector_styles(name)


def select_classes(candidates: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The candidates that render in Noto, Symbola and OpenMoji (sorted), and their stamps."""
    stamps = labels.match_tux_stamps(candidates)
    need = {"noto", "symbola", HELDOUT_STYLE}
    keep = sorted(c for c in candidates if need <= set(available_styles(c, stamps)))
    return keep, {c: stamps[c] for c in keep if c in stamps}


def augment_cutout(im: Image.Image, rng: np.random.Generator, size: float, style: str) -> Image.Image:
    """Colour, flip, scale (longest side = `size` px) and rotate a cut-out; returns a tight RGBA."""
    if style in INK_STYLES:
        im = _colour_sticker(im, rng)
    alpha = im.getchannel("A")
    rgb = im.convert("RGB")
    rgb = ImageEnhance.Brightness(rgb).enhance(rng.uniform(0.75, 1.25))
    rgb = ImageEnhance.Contrast(rgb).enhance(rng.uniform(0.75, 1.25))
    rgb = ImageEnhance.Color(rgb).enhance(rng.uniform(0.6, 1.4))
    im = rgb.convert("RGBA")
    im.putalpha(alpha)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    scale = size / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
    if rng.random() < 0.7:
        im = im.rotate(rng.uniform(-25, 25), resample=Image.BICUBIC, expand=True)
    arr = np.asarray(im).copy()
    arr[..., 3][arr[..., 3] < ALPHA_CUT] = 0
    im = Image.fromarray(arr, "RGBA")
    box = im.getchannel("A").getbbox()
    return im.crop(box) if box else im


# ---- backgrounds --------------------------------------------------------------------------------

@functools.cache
def _picture(name: str) -> np.ndarray:
    im = Image.open(Path(deps.skimage_data_dir()) / name)
    return np.asarray(im.convert("RGB") if im.mode != "L" else im)


def _crop(arr: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    side = int(rng.uniform(0.35, 1.0) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    im = Image.fromarray(arr[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    out = np.asarray(im, dtype=np.float32)
    if out.ndim == 2:  # grey pictures get a random tint so they are not all grey
        out = out[..., None] * rng.uniform(0.5, 1.0, 3) + rng.uniform(0, 60, 3)
    return out[:, ::-1] if rng.random() < 0.5 else out


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Random colour field: a cells x cells grid of colours upsampled smoothly to size x size."""
    grid = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return a * (1 - t) + b * t


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stripes or a checkerboard in two random colours at a random angle and period."""
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    on = (u // period) % 2 == 0
    if rng.random() < 0.5:
        on ^= (v // period) % 2 == 0
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return np.where(on[..., None], a, b)


def background(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size float32 RGB background of the given kind (one of BACKGROUNDS)."""
    if kind == "photo":
        out = _crop(_picture(PHOTOS[rng.integers(len(PHOTOS))]), rng, size)
    elif kind == "texture":
        if rng.random() < 0.5:
            out = _crop(_picture(TEXTURES[rng.integers(len(TEXTURES))]), rng, size)
        else:
            out = _pattern(rng, size)
    elif kind == "gradient":
        out = _gradient(rng, size)
    else:
        out = 0.7 * _smooth_noise(rng, size, int(rng.integers(2, 9))) + 0.3 * _smooth_noise(rng, size, size // 4)
    out = out + rng.normal(0, rng.uniform(0, 6), out.shape)    # sensor-like grain
    return np.clip(out, 0, 255).astype(np.float32)


# ---- compositing --------------------------------------------------------------------------------

def _clip(obj: Image.Image, x: int, y: int, H: int, W: int):
    """The window of the canvas that `obj` covers at (x, y), and the matching window of `obj`."""
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + obj.width, W), min(y + obj.height, H)
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))


def footprint(obj: Image.Image, x: int, y: int, H: int, W: int) -> np.ndarray:
    """Bool (H, W) mask of the canvas pixels that `obj` would cover (alpha > 0) at (x, y)."""
    mask = np.zeros((H, W), dtype=bool)
    dst, src = _clip(obj, x, y, H, W)
    mask[dst] = np.asarray(obj.getchannel("A"))[src] > 0
    return mask


def paste(canvas: np.ndarray, obj: Image.Image, x: int, y: int) -> None:
    """Alpha-blend `obj` onto the float RGB `canvas` in place with its top-left at (x, y)."""
    dst, src = _clip(obj, x, y, *canvas.shape[:2])
    part = np.asarray(obj, dtype=np.float32)[src]
    a = part[..., 3:] / 255.0
    canvas[dst] = a * part[..., :3] + (1 - a) * canvas[dst]


def finish(canvas: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Quantise to an RGB image, sometimes slightly out of focus (as real photos are)."""
    im = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.2:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    return im


def save_jpeg(im: Image.Image, path: Path, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "JPEG", quality=quality)
