"""The playground's example inputs, in one place: each tab offers them, and the model card shows what
the checkpoint answers to each, since they are what a demo's audience sees first.

Each example carries what a right answer is, where there is one (None: no single right answer).
"""
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "assets" / "examples"
CHAT = [("Hello!", None), ("What is 12 plus 7?", "19"), ("Spell the word apple.", "a-p-p-l-e"),
        ("What does the word 'harbour' mean?", None), ("How many centimeters are in 3 meters?", "300 centimeters")]
SUMMARIZE = ("package_description.txt", None)
CLASSIFY = [("dog.png", "dog"), ("red_apple.png", "red apple"), ("automobile.png", "automobile")]
DETECT = ("scene.png", ["dog", "red apple", "automobile"])
DETECT_THRESHOLD = 0.3
TRANSCRIBE = [("hello_world.wav", "hello world this is a test"), ("open_the_door.flac", "please open the door")]


def path(name: str) -> str:
    return str(FOLDER / name)


def summarize_text() -> str:
    return (FOLDER / SUMMARIZE[0]).read_text(encoding="utf-8").strip()


def answers(pipe) -> list[dict]:
    """What `pipe` answers to every example, as the tabs ask (chat greedy, summaries
    with the app's beam search):
    [{"tab", "input", "expected", "output"}], the output as a line of text."""
    rows = [{"tab": "Chat", "input": q, "expected": want,
             "output": pipe.chat([{"role": "user", "content": q}], temperature=0.0)} for q, want in CHAT]
    rows.append({"tab": "Summarize", "input": SUMMARIZE[0], "expected": SUMMARIZE[1],
                 "output": pipe.summarize(summarize_text())})
    for name, want in CLASSIFY:
        label, p = pipe.classify(path(name), top_k=1)[0]
        rows.append({"tab": "Classify", "input": name, "expected": want, "output": f"{label} ({p:.0%})"})
    boxes = pipe.detect(path(DETECT[0]), threshold=DETECT_THRESHOLD)  # what the tab shows, best first
    found = ", ".join(f"{b['label']} ({b['score']:.2f})" for b in boxes)
    if not boxes:
        every = pipe.detect(path(DETECT[0]), threshold=0.0)
        found = f"no box scores {DETECT_THRESHOLD} or more" + (
            f" (best: {every[0]['label']}, {every[0]['score']:.2f})" if every else "")
    rows.append({"tab": "Detect", "input": f"{DETECT[0]}, threshold {DETECT_THRESHOLD}",
                 "expected": ", ".join(DETECT[1]), "output": found})
    rows += [{"tab": "Speech-to-text", "input": name, "expected": want, "output": pipe.transcribe(path(name))}
             for name, want in TRANSCRIBE]
    return rows
