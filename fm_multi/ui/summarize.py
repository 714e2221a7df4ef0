"""The Summarize tab: text in, a one-line summary out, with a length control.

With Explain ticked, a private event after the `summarize` endpoint shows each summary token with
its probability under the model, the unlikely ones highlighted. Summaries are deterministic (a beam
search, see Pipeline.summarize_detailed), so decoding again gives the same tokens the endpoint returned.
"""
from __future__ import annotations

import gradio as gr

from fm_multi import examples, explain
from fm_multi.ui.common import TOKENS_LABEL, explain_box, token_cap, user_errors


def make_summarize(pipeline):
    def summarize(text: str, max_new_tokens: int) -> str:
        """Summarize `text` in at most `max_new_tokens` tokens."""
        with user_errors("summarize"):
            return pipeline.summarize(text, max_new_tokens=int(max_new_tokens))
    return summarize


def make_explain(pipeline):
    def explain_summary(text: str, max_new_tokens: int, show: bool):
        """-> [(token, doubt or None)] of the summary when `show`."""
        if not show or not text:
            return gr.update(value=None, visible=bool(show))
        with user_errors("summarize"):
            _, probs = pipeline.summarize_detailed(text, max_new_tokens=int(max_new_tokens))
        return gr.update(value=explain.token_highlights(probs), visible=True)
    return explain_summary


def build(pipeline) -> None:
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(lines=10, label="Text to summarize",
                              placeholder="Paste a paragraph or two, e.g. a package description.")
            cap = token_cap(pipeline, share=0.25)
            length = gr.Slider(4, cap, min(48, cap), step=1, label="Max summary tokens")
            show = explain_box("how likely the model found each word it wrote")
            run = gr.Button("Summarize", variant="primary", elem_id="summarize-run")
        with gr.Column():
            summary = gr.Textbox(lines=3, label="Summary", buttons=["copy"], elem_id="summarize-output")
            tokens = gr.HighlightedText(label=TOKENS_LABEL, visible=False, elem_id="summarize-tokens")
    gr.Examples([[examples.summarize_text()]], [text], api_visibility="private")
    event = run.click(make_summarize(pipeline), [text, length], summary, api_name="summarize")
    explain_fn = make_explain(pipeline)
    event.success(explain_fn, [text, length, show], tokens, api_visibility="private")
    show.change(explain_fn, [text, length, show], tokens, api_visibility="private")
