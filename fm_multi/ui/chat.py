"""The Chat tab: a streaming, multi-turn gr.ChatInterface over Pipeline.chat_stream.

With Explain ticked, the last reply is shown again token by token with the unlikely tokens
highlighted. A private event on the conversation's change scores the reply in one forward pass
(Pipeline.chat_token_probs), so the `chat` endpoint keeps streaming plain text.
"""
from __future__ import annotations

from contextlib import closing

import gradio as gr
import torch

from fm_multi import examples, explain
from fm_multi.engine import SamplingParams
from fm_multi.ui.common import TOKENS_LABEL, explain_box, log, token_cap, user_errors


def text_of(content) -> str:
    """A Chatbot message's content (a string or a list of parts in gradio 6) -> its text."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return "".join(p if isinstance(p, str) else p.get("text", "") for p in parts if isinstance(p, (str, dict)))


def make_respond(pipeline):
    # Decorated so each resumption runs in inference mode on whichever worker thread gradio uses;
    # a `with` block held across `yield` would leak the mode into that thread.
    @torch.inference_mode()
    def respond(message: str, history: list, system_prompt: str, temperature: float, top_k: int,
                top_p: float, max_new_tokens: int):
        """Stream the assistant's reply to `message` given the earlier turns."""
        messages = [{"role": m["role"], "content": text_of(m["content"])} for m in history
                    if m.get("role") in ("user", "assistant")]
        messages.append({"role": "user", "content": message})
        sampling = {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p),
                    "max_new_tokens": int(max_new_tokens)}
        stream = pipeline.chat_stream(messages, system_prompt, **sampling)
        n_tokens = 0
        try:
            # closing(): the stop button closes this generator, and that must close the Pipeline's
            # stream (and so its decoding loop) at once, not whenever it is garbage-collected.
            with closing(stream), user_errors("chat"):
                for n_tokens, reply in enumerate(stream, 1):
                    yield reply
        except GeneratorExit:
            log.info("chat stopped by the user after %d tokens", n_tokens)
            raise
    return respond


def make_explain(pipeline):
    def explain_reply(history: list, system_prompt: str, show: bool):
        """-> [(token, doubt or None)] of the last assistant reply when `show`."""
        if not show:
            return gr.update(value=None, visible=False)
        messages = [{"role": m["role"], "content": text_of(m["content"])} for m in history or []
                    if m.get("role") in ("user", "assistant")]
        if not messages or messages[-1]["role"] != "assistant":
            return gr.update(value=None, visible=True)
        with user_errors("chat"):
            probs = pipeline.chat_token_probs(messages, system_prompt)
        return gr.update(value=explain.token_highlights(probs), visible=True)
    return explain_reply


def build(pipeline) -> gr.ChatInterface:
    limit = token_cap(pipeline, share=0.5)
    default = SamplingParams()   # the engine's defaults (`fm-multi eval` counts loops under them too)
    inputs = [
        gr.Textbox("You are a helpful assistant.", label="System prompt", render=False),
        gr.Slider(0.0, 2.0, default.temperature, step=0.05, label="Temperature",
                  info="0 = always the likeliest token", render=False),
        gr.Slider(0, 200, default.top_k, step=1, label="Top-k", info="0 = off", render=False),
        gr.Slider(0.05, 1.0, default.top_p, step=0.05, label="Top-p", info="1 = off", render=False),
        gr.Slider(1, limit, min(default.max_new_tokens, limit), step=1, label="Max new tokens", render=False),
    ]  # render=False: ChatInterface places them in its own accordion
    chat = gr.ChatInterface(make_respond(pipeline), additional_inputs=inputs,
                            additional_inputs_accordion=gr.Accordion("Sampling", open=False, render=False),
                            examples=[[q] for q, _ in examples.CHAT], cache_examples=False,
                            api_name="chat", fill_height=False)
    show = explain_box("how likely the model found each token of its last reply")
    tokens = gr.HighlightedText(label=TOKENS_LABEL, visible=False, elem_id="chat-tokens")
    explain_fn = make_explain(pipeline)
    # The chatbot changes with every streamed chunk; change events default to trigger_mode
    # "always_last", so at most one rescoring waits behind the running one and the last one sees
    # the finished reply. (ChatInterface's chatbot_value state is not reported as changed to the
    # browser after a normal turn, so it cannot be the trigger.)
    for trigger in (chat.chatbot.change, show.change):
        trigger(explain_fn, [chat.chatbot, inputs[0], show], tokens, api_visibility="private",
                show_progress="hidden")
    return chat
