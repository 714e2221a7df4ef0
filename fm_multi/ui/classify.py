"""The Classify tab: an image (upload, webcam or clipboard) -> the top-5 classes."""
from __future__ import annotations

import gradio as gr

from fm_multi.ui.common import example, file_path, user_errors

EXAMPLES = ["dog.png", "red_apple.png", "automobile.png"]


def make_classify(pipeline):
    def classify(image) -> dict[str, float]:
        """Top-5 class probabilities for an image."""
        with user_errors("classify"):
            return dict(pipeline.classify(file_path(image), top_k=5))
    return classify


def build(pipeline) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Image",
                             elem_id="classify-input")
            run = gr.Button("Classify", variant="primary", elem_id="classify-run")
        label = gr.Label(num_top_classes=5, label="Top 5 classes", elem_id="classify-output")
    gr.Examples([[example(n)] for n in EXAMPLES], [image], api_visibility="private")
    # preprocess=False: the Pipeline reads the upload itself and explains an unreadable one
    run.click(make_classify(pipeline), image, label, api_name="classify", preprocess=False)
