"""The Speech-to-text tab: microphone or file (any rate, stereo, wav/flac/ogg/mp3) -> transcript.

With Explain ticked, a private event after the `transcribe` endpoint shows the spectrogram with the
CTC alignment (which 40 ms token emitted which letter) and the words coloured by confidence.
"""
from __future__ import annotations

import gradio as gr

from fm_multi import examples, explain, plots
from fm_multi.ui.common import explain_box, user_errors


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


def make_explain(pipeline):
    def explain_transcript(audio: str, show: bool):
        """-> (alignment picture, [(word, doubt)]) when `show`, else both hidden."""
        if not show or audio is None:
            return gr.update(value=None, visible=bool(show)), gr.update(value=None, visible=bool(show))
        with user_errors("transcribe"):
            r = pipeline.transcribe_detailed(audio)
        picture = plots.alignment_image(r["mel"], r["alignment"], r["frames_per_token"], r["frame_seconds"])
        words = explain.word_highlights(explain.word_confidences(r["alignment"]))
        return gr.update(value=picture, visible=True), gr.update(value=words, visible=True)
    return explain_transcript


def build(pipeline) -> None:
    with gr.Row():
        with gr.Column():
            # filepath without `format`: gradio passes the upload through untouched and the
            # Pipeline decodes it, so an unreadable file gets the Pipeline's message
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
            show = explain_box("the alignment of letters to sound and how sure each word is")
            run = gr.Button("Transcribe", variant="primary", elem_id="transcribe-run")
        text = gr.Textbox(lines=4, label="Transcript", buttons=["copy"], elem_id="transcribe-output")
    picture = gr.Image(label="Why: spectrogram and CTC alignment", visible=False, interactive=False,
                       elem_id="transcribe-alignment")
    words = gr.HighlightedText(label="Words by confidence (the redder, the less sure)", visible=False,
                               elem_id="transcribe-words")
    gr.Examples([[examples.path(n)] for n, _ in examples.TRANSCRIBE], [audio], api_visibility="private")
    event = run.click(make_transcribe(pipeline), audio, text, api_name="transcribe")
    explain_fn = make_explain(pipeline)
    event.success(explain_fn, [audio, show], [picture, words], api_visibility="private")
    show.change(explain_fn, [audio, show], [picture, words], api_visibility="private")
