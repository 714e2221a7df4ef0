"""The Detect tab: an image and a score threshold -> labelled boxes, drawn and as JSON.

The JSON boxes are in the input image's pixels. The drawing uses a copy no larger than
DISPLAY_SIDE, because gradio paints one full-size mask per box and a 6000 x 6000 input would
cost gigabytes. With Explain ticked, a private event after the `detect` endpoint adds a gallery of
per-box saliency maps (one backward pass each, so at most MAX_EXPLAINED boxes).
"""
from __future__ import annotations

import gradio as gr

from fm_multi import examples
from fm_multi.ui.common import display_copy, explain_box, file_path, user_errors

MAX_DRAWN = 30  # more boxes than this only clutter the picture; the JSON keeps them all
MAX_EXPLAINED = 8


def drawable(img, detections: list[dict]):
    """(RGB copy at most DISPLAY_SIDE px, [((x0, y0, x1, y1) in its pixels, label)]) for gr.AnnotatedImage."""
    shown = display_copy(img)
    sx, sy = shown.width / img.width, shown.height / img.height
    boxes = []
    for d in detections[:MAX_DRAWN]:
        x0, y0, x1, y1 = d["box"]
        box = (int(x0 * sx), int(y0 * sy), max(int(x1 * sx), int(x0 * sx) + 1), max(int(y1 * sy), int(y0 * sy) + 1))
        boxes.append((box, f"{d['label']} {d['score']:.2f}"))
    return shown, boxes


def make_detect(pipeline):
    def detect(image, threshold: float):
        """Objects scoring at least `threshold`: (annotated image, [{"label", "score", "box"}])."""
        with user_errors("detect"):
            img = pipeline.load_image(file_path(image))
            detections = pipeline.detect(img, threshold=float(threshold))
            return drawable(img, detections), detections
    return detect


def make_explain(pipeline):
    def explain(image, threshold: float, show: bool):
        """-> the gallery of [(heat map, "label score")] for the best boxes, when `show`."""
        if not show or image is None:
            return gr.update(value=None, visible=bool(show))
        with user_errors("detect"):
            img = display_copy(pipeline.load_image(file_path(image)))
            dets = pipeline.explain_detect(img, float(threshold), max_boxes=MAX_EXPLAINED)
        return gr.update(value=[(d["heatmap"], f"{d['label']} {d['score']:.2f}") for d in dets], visible=True)
    return explain


def build(pipeline) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Image",
                             elem_id="detect-input")
            threshold = gr.Slider(0.0, 1.0, 0.3, step=0.01, label="Score threshold", elem_id="detect-threshold")
            show = explain_box(f"what each box looked at (the best {MAX_EXPLAINED})")
            run = gr.Button("Detect", variant="primary", elem_id="detect-run")
        with gr.Column():
            drawn = gr.AnnotatedImage(label="Detections", height=420)
            boxes = gr.JSON(label="Boxes [x0, y0, x1, y1] in input pixels", open=True, elem_id="detect-output")
            heat = gr.Gallery(label="Why: saliency per box (gradient x input)", visible=False, columns=4,
                              height=300, object_fit="contain", elem_id="detect-explain")
    gr.Examples([[examples.path(examples.DETECT[0]), examples.DETECT_THRESHOLD]], [image, threshold],
                api_visibility="private")
    event = run.click(make_detect(pipeline), [image, threshold], [drawn, boxes], api_name="detect", preprocess=False)
    explain = make_explain(pipeline)
    event.success(explain, [image, threshold, show], heat, api_visibility="private", preprocess=False)
    show.change(explain, [image, threshold, show], heat, api_visibility="private", preprocess=False)
