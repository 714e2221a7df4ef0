"""Build and serve the playground: `python app.py` and `fm-multi serve` both end in `serve(args)`.

    python app.py --checkpoint assets/checkpoint      # http://127.0.0.1:7860
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=8080 fm-multi serve --checkpoint owner/name

The model loads once, before the server starts; a checkpoint that cannot be loaded ends the
program with one sentence and exit status 2. gradio is imported inside the functions, so
registering the subcommand keeps `fm-multi --help` fast.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys


def file_size(text: str) -> str:
    if not re.fullmatch(r"\d+\s*(b|kb|mb|gb)", text.strip(), re.IGNORECASE):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 25MB")
    return text.strip()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    env = os.environ.get
    parser.add_argument("--checkpoint", default=env("FM_CHECKPOINT"),
                        help="checkpoint folder or Hugging Face repo id (default: $FM_CHECKPOINT, "
                             "else assets/checkpoint)")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")),
                        help="port to listen on (default: $GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live share link")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--max-file-size", type=file_size, default="25MB",
                        help="largest upload accepted (default: 25MB)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="requests run at once per endpoint; more wait in the queue (default: 2)")
    parser.add_argument("--queue-size", type=int, default=64,
                        help="requests that may wait in the queue before new ones are refused (default: 64)")
    parser.add_argument("--min-confidence", type=float, default=0.3,
                        help="the Classify tab says \"I'm not sure\" below this top-class probability (default: 0.3)")
    return parser


def make_image_cache_atomic() -> None:
    """Make gradio's cache of output images safe for identical concurrent answers.

    Gradio stores an output picture under a hash of its bytes and rewrites that file in place on
    every request. When several users get the same picture at the same moment (everyone clicking
    the same example), one request's download can read the file while another request truncates it,
    and the download fails (tests/test_load.py caught it on /detect). Writing to a temporary name and
    renaming over the target makes every rewrite atomic; the bytes are the same, so a reader always
    sees a whole file.
    """
    import tempfile
    from pathlib import Path

    from gradio import processing_utils

    def save_pil_to_cache(img, cache_dir, name: str = "image", format: str = "webp") -> str:
        data = processing_utils.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / processing_utils.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        target = (folder / f"{name}.{format}").resolve()
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
        return str(target)

    processing_utils.save_pil_to_cache = save_pil_to_cache


def build_demo(pipeline):
    """The gr.Blocks app over a loaded Pipeline: one tab per task plus the Model tab."""
    import gradio as gr

    make_image_cache_atomic()
    from fm_multi.ui import chat, classify, detect, model_tab, summarize, transcribe

    # delete_cache: uploads and outputs older than an hour are removed every hour
    with gr.Blocks(title="fm_multi playground", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# fm_multi playground\nOne shared Transformer backbone with text, image and audio "
                    "encoders: chat, summarize, classify, detect and transcribe.")
        with gr.Tabs():
            with gr.Tab("Chat", elem_id="tab-chat"):
                chat.build(pipeline)
            with gr.Tab("Summarize", elem_id="tab-summarize"):
                summarize.build(pipeline)
            with gr.Tab("Classify", elem_id="tab-classify"):
                classify.build(pipeline)
            with gr.Tab("Detect", elem_id="tab-detect"):
                detect.build(pipeline)
            with gr.Tab("Speech-to-text", elem_id="tab-transcribe"):
                transcribe.build(pipeline)
            with gr.Tab("Model", elem_id="tab-model") as tab:
                model_tab.build(pipeline, tab)
    return demo


def launch(demo, args, **kwargs):
    """Queue and serve `demo` with the command line's options; blocks unless prevent_thread_lock."""
    from fm_multi.examples import FOLDER

    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    return demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                       allowed_paths=[str(FOLDER)], max_file_size=args.max_file_size, **kwargs)


def serve(args) -> int:
    from fm_multi.ui.memory import cap_malloc_arenas

    cap_malloc_arenas()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests
    from fm_multi.checkpoint import CheckpointError
    from fm_multi.pipeline import DEFAULT_CHECKPOINT, Limits, Pipeline

    checkpoint = args.checkpoint or str(DEFAULT_CHECKPOINT)
    try:
        pipeline = Pipeline.from_pretrained(checkpoint, device=args.device,
                                            limits=Limits(min_confidence=args.min_confidence))
    except (CheckpointError, OSError, RuntimeError) as e:
        print(f"error: cannot load the model ({e}); pass --checkpoint or set FM_CHECKPOINT "
              "to a checkpoint folder or Hugging Face repo id.", file=sys.stderr)
        return 2
    launch(build_demo(pipeline), args)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("serve", help="serve the Gradio playground (the same as python app.py)")
    add_arguments(p)
    p.set_defaults(func=serve)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="app.py", description="Serve the fm_multi Gradio playground.")
    return serve(add_arguments(parser).parse_args(argv))
