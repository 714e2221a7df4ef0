"""The Model tab: the checkpoint's model card, the device, parameter counts, last latency.

The card's figures are files beside README.md (written by `fm-multi card`); a Markdown image
link to a relative file cannot be fetched by the browser, so the links are replaced by their
captions and the figures are shown in a gallery under the card.
"""
from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

FIGURE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def facts(pipeline) -> str:
    """A Markdown summary of what is loaded and how fast the last call ran."""
    latency = pipeline.last_latency_s
    rows = [f"| {part} | {n:,} |" for part, n in pipeline.model.parameter_counts().items()]
    return "\n".join([
        f"**Device:** `{pipeline.device}`  ",
        f"**Checkpoint:** `{pipeline.source}`  ",
        f"**Last call took:** {'no call yet' if latency is None else f'{latency * 1000:.1f} ms'}",
        "", "| part | parameters |", "| --- | ---: |", *rows,
    ])


def card_body(card: str) -> str:
    """The model card without its YAML front matter, which Markdown would show as text."""
    if card.startswith("---\n") and "\n---" in card[4:]:
        return card[4:].split("\n---", 1)[1].lstrip("-\n")
    return card


def card_figures(card: str, folder) -> list[tuple[str, str]]:
    """[(path, caption)] of the card's images that exist as files in `folder`."""
    found = [(Path(folder) / target, caption) for caption, target in FIGURE.findall(card)
             if "://" not in target]
    return [(str(path), caption) for path, caption in found if path.is_file()]


def with_captions(body: str, figures: list[tuple[str, str]]) -> str:
    """Replace links to the gallery's figures by "(figure: caption, in the gallery below)"."""
    shown = {Path(p).name for p, _ in figures}
    return FIGURE.sub(lambda m: f"*(figure: {m.group(1)}, in the gallery below)*"
                      if Path(m.group(2)).name in shown else m.group(0), body)


def build(pipeline, tab: gr.Tab) -> None:
    """Call inside `tab`; the numbers refresh when the tab is opened or the button pressed."""
    summary = gr.Markdown(facts(pipeline), elem_id="model-facts")
    refresh = gr.Button("Refresh", size="sm")
    card = pipeline.model_card()
    figures = card_figures(card, pipeline.source)
    with gr.Accordion("Model card", open=True):
        gr.Markdown(with_captions(card_body(card), figures))
    if figures:
        gr.Gallery(figures, label="Figures of the model card", columns=2, height="auto", object_fit="contain",
                   elem_id="model-figures")
    for event in (refresh.click, tab.select):
        event(lambda: facts(pipeline), None, summary, api_visibility="private", queue=False)
