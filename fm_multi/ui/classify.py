"""The Classify tab: an image (upload, webcam or clipboard) -> the top-5 classes.

Below the classes: "I'm not sure" when the calibrated top class is under Limits.min_confidence,
and, with Explain ticked, the saliency heat map of the top class. Both come from a private event
after the `classify` endpoint, whose output stays the plain top-5 Label.
"""
from __future__ import annotations

import gradio as gr

from fm_multi import examples
from fm_multi.ui.common import display_copy, explain_box, file_path, label_top, user_errors


def make_classify(pipeline):
    def classify(image) -> dict[str, float]:
        """Top-5 class probabilities for an image."""
        with user_errors("classify"):
            return dict(pipeline.classify(file_path(image), top_k=5))
    return classify


def make_explain(pipeline):
    def explain(image, label, show: bool):
        """-> (the "I'm not sure" notice or "", the saliency overlay when `show`)."""
        top = label_top(label)
        notice = (pipeline.unsure_message(top) or "") if top else ""
        if not show or image is None:
            return notice, gr.update(value=None, visible=bool(show))
        with user_errors("classify"):
            overlay, _ = pipeline.explain_classify(display_copy(pipeline.load_image(file_path(image))))
        return notice, gr.update(value=overlay, visible=True)
    return explain


def build(pipeline) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Image",
                             elem_id="classify-input")
            show = explain_box("a heat map of the pixels that raised the top class")
            run = gr.Button("Classify", variant="primary", elem_id="classify-run")
        with gr.Column():
            label = gr.Label(num_top_classes=5, label="Top 5 classes", elem_id="classify-output")
            notice = gr.Markdown(elem_id="classify-notice")
            heat = gr.Image(label="Why: saliency for the top class (gradient x input)", visible=False,
                            interactive=False, elem_id="classify-explain")
    gr.Examples([[examples.path(n)] for n, _ in examples.CLASSIFY], [image], api_visibility="private")
    # preprocess=False: the Pipeline reads the upload itself and explains an unreadable one
    event = run.click(make_classify(pipeline), image, label, api_name="classify", preprocess=False)
    explain = make_explain(pipeline)
    event.success(explain, [image, label, show], [notice, heat], api_visibility="private", preprocess=False)
    show.change(explain, [image, label, show], [notice, heat], api_visibility="private", preprocess=False)
