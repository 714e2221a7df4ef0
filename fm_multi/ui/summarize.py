"""The Summarize tab: text in, a one-line summary out, with a length control."""
from __future__ import annotations

import gradio as gr

from fm_multi.ui.common import EXAMPLES, token_cap, user_errors


def make_summarize(pipeline):
    def summarize(text: str, max_new_tokens: int) -> str:
        """Summarize `text` in at most `max_new_tokens` tokens."""
        with user_errors("summarize"):
            return pipeline.summarize(text, max_new_tokens=int(max_new_tokens))
    return summarize


def build(pipeline) -> None:
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(lines=10, label="Text to summarize",
                              placeholder="Paste a paragraph or two, e.g. a package description.")
            cap = token_cap(pipeline, share=0.25)
            length = gr.Slider(4, cap, min(48, cap), step=1, label="Max summary tokens")
            run = gr.Button("Summarize", variant="primary", elem_id="summarize-run")
        summary = gr.Textbox(lines=3, label="Summary", buttons=["copy"], elem_id="summarize-output")
    sample = (EXAMPLES / "package_description.txt").read_text(encoding="utf-8").strip()
    gr.Examples([[sample]], [text], api_visibility="private")
    run.click(make_summarize(pipeline), [text, length], summary, api_name="summarize")
