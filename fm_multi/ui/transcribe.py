"""The Speech-to-text tab: microphone or file (any rate, stereo, wav/flac/ogg/mp3) -> transcript."""
from __future__ import annotations

import gradio as gr

from fm_multi.ui.common import example, user_errors

EXAMPLES = ["hello_world.wav", "open_the_door.flac"]


def make_transcribe(pipeline):
    def transcribe(audio: str) -> str:
        """The transcript of an audio file; longer audio than the limit is cut, with a warning."""
        with user_errors("transcribe"):
            result = pipeline.transcribe_detailed(audio)
        if result["truncated"]:
            gr.Warning(f"The audio is longer than {pipeline.limits.max_audio_seconds:g} s; "
                       f"only the first {result['seconds']:g} s were transcribed.")
        if result.get("silent"):
            gr.Warning("The audio is silent, so there is nothing to transcribe.")
        return result["text"]
    return transcribe


def build(pipeline) -> None:
    with gr.Row():
        with gr.Column():
            # filepath without `format`: gradio passes the upload through untouched and the
            # Pipeline decodes it, so an unreadable file gets the Pipeline's message
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
            run = gr.Button("Transcribe", variant="primary", elem_id="transcribe-run")
        text = gr.Textbox(lines=4, label="Transcript", buttons=["copy"], elem_id="transcribe-output")
    gr.Examples([[example(n)] for n in EXAMPLES], [audio], api_visibility="private")
    run.click(make_transcribe(pipeline), audio, text, api_name="transcribe")
