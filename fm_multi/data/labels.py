"""The image label set: everyday emoji classes named by their CLDR short names.

Class names are exactly the names in Unicode's emoji-test.txt ("dog", "red apple"), so a label is
a stable, documented identifier and every class has a glyph in each emoji font. The candidate list
below was picked by hand from the groups Animals & Nature, Food & Drink, Travel & Places and
Objects: things a photo could show, leaving out near-duplicates that no picture can tell apart
("dog face" next to "dog"), clock faces, moon phases and flags. Tux Paint stamps join a class only
when their English label names it exactly, or through the short alias table below.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from fm_multi.data import deps

GROUPS = ("Animals & Nature", "Food & Drink", "Travel & Places", "Objects")

CANDIDATES = [
    # Animals & Nature
    "monkey", "dog", "wolf", "fox", "cat", "lion", "tiger", "horse", "zebra", "deer", "cow", "pig",
    "goat", "camel", "giraffe", "elephant", "rhinoceros", "hippopotamus", "mouse", "rabbit",
    "hedgehog", "bat", "bear", "koala", "panda", "kangaroo", "chicken", "rooster", "penguin",
    "eagle", "duck", "swan", "owl", "flamingo", "parrot", "frog", "crocodile", "turtle", "snake",
    "whale", "dolphin", "fish", "shark", "octopus", "snail", "butterfly", "honeybee", "lady beetle",
    "spider", "rose", "sunflower", "tulip", "cactus", "palm tree", "evergreen tree", "mushroom",
    "maple leaf",
    # Food & Drink
    "grapes", "watermelon", "lemon", "banana", "pineapple", "red apple", "pear", "peach", "cherries",
    "strawberry", "tomato", "coconut", "carrot", "ear of corn", "broccoli", "potato", "eggplant",
    "avocado", "bread", "cheese wedge", "hamburger", "french fries", "pizza", "hot dog", "taco",
    "popcorn", "doughnut", "cookie", "birthday cake", "cupcake", "ice cream", "lollipop", "teapot",
    "wine glass", "baby bottle", "spoon", "crab", "shrimp",
    # Travel & Places
    "house", "castle", "tent", "bicycle", "motorcycle", "automobile", "bus", "ambulance",
    "fire engine", "police car", "tractor", "pickup truck", "racing car", "locomotive", "airplane",
    "helicopter", "rocket", "sailboat", "anchor", "umbrella", "snowman", "sun", "rainbow", "volcano",
    # Objects
    "glasses", "necktie", "t-shirt", "jeans", "socks", "dress", "handbag", "backpack",
    "running shoe", "top hat", "crown", "guitar", "violin", "trumpet", "drum", "saxophone",
    "microphone", "headphone", "mobile phone", "telephone", "laptop", "light bulb", "candle",
    "camera", "television", "closed book", "envelope", "pencil", "scissors", "key", "hammer",
    "wrench", "toolbox", "syringe", "bed", "chair", "toilet", "broom", "alarm clock",
]

# The --small build: classes that are quick to tell apart and mostly have Tux Paint stamps too.
SMALL_CLASSES = ["automobile", "banana", "butterfly", "cow", "frog", "guitar", "lion", "pineapple",
                 "red apple", "snowman", "strawberry", "tractor"]

# Tux Paint label (lowercase, article and final period removed) -> class. Only unambiguous ones.
TUX_ALIASES = {
    "ladybug": "lady beetle", "fire truck": "fire engine", "t shirt": "t-shirt", "race car": "racing car",
    "sedan car": "automobile", "yellow lemon": "lemon", "electric guitar": "guitar",
    "pair of open scissors": "scissors", "pair of closed scissors": "scissors",
    "some cherries": "cherries", "pair of cherries": "cherries", "steam locomotive": "locomotive",
    "pink flamingo": "flamingo", "sweet yellow corn": "ear of corn", "ripe, red tomato": "tomato",
    "bee": "honeybee", "sock": "socks", "red kangaroo": "kangaroo", "happy snail": "snail",
}


@dataclass(frozen=True)
class Emoji:
    char: str
    name: str
    group: str
    subgroup: str


def load_emoji(path: str = deps.EMOJI_TEST) -> dict[str, Emoji]:
    """Single-code-point, fully-qualified emoji of the four object groups, keyed by CLDR name."""
    table, group, subgroup = {}, "", ""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and group in GROUPS:
            codes, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            # U+FE0F only asks for colour presentation; the fonts draw the base code point.
            points = [c for c in codes.split() if c != "FE0F"]
            if status.strip() == "fully-qualified" and len(points) == 1:
                name = comment.strip().split(" ", 2)[2]  # "🐶 E0.6 dog face" -> "dog face"
                table[name] = Emoji(chr(int(points[0], 16)), name, group, subgroup)
    return table


def tux_label(txt_path: Path) -> str:
    """The English label of a stamp, normalised: "A red kangaroo." -> "red kangaroo"."""
    first = txt_path.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip().lower()
    first = re.sub(r"^(a|an|the)\s+", "", first)
    return first.rstrip(".!").strip()


def match_tux_stamps(classes: list[str], root: str = deps.TUX_STAMPS) -> dict[str, list[str]]:
    """PNG stamps whose label names one of `classes`, as {class: sorted paths}."""
    wanted, found = set(classes), {}
    if not Path(root).is_dir():
        return found
    for txt in sorted(Path(root).rglob("*.txt")):
        png = txt.with_suffix(".png")
        if not png.exists():
            continue
        label = tux_label(txt)
        name = TUX_ALIASES.get(label, label)
        if name in wanted:
            found.setdefault(name, []).append(str(png))
    return found
