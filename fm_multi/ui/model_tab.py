"""The Model tab: the checkpoint's model card, the device, parameter counts, last latency."""
from __future__ import annotations

import gradio as gr


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


def build(pipeline, tab: gr.Tab) -> None:
    """Call inside `tab`; the numbers refresh when the tab is opened or the button pressed."""
    summary = gr.Markdown(facts(pipeline), elem_id="model-facts")
    refresh = gr.Button("Refresh", size="sm")
    with gr.Accordion("Model card", open=True):
        gr.Markdown(card_body(pipeline.model_card()))
    for event in (refresh.click, tab.select):
        event(lambda: facts(pipeline), None, summary, api_visibility="private", queue=False)
