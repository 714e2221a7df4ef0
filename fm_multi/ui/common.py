"""What every tab shares: the one way Pipeline errors reach a user, and the "Explain" switch.
The example inputs live in fm_multi/examples.py.

Explanations are extra outputs filled by a second, private event (api_visibility="private") that runs
after a task's own event; the five API endpoints and their return values stay as they are.

`user_errors` turns the Pipeline's InputError (its message is written for end users) into a
gr.Error with that message. Anything else is a bug or an outage: it is logged with its traceback
on the server and the user sees one generic sentence, never gradio's "upstream app raised an
exception". Either way the server keeps serving.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import gradio as gr

from fm_multi.explain import LOW_PROBABILITY
from fm_multi.pipeline import InputError
from fm_multi.ui.memory import release_free_memory

DISPLAY_SIDE = 1024  # pictures drawn for display are at most this big: gradio and the overlays work per pixel
UNEXPECTED = ("The model failed on this input because of an internal error (it has been logged). "
              "Please try another input.")

TOKENS_LABEL = f"Tokens (red: probability under {LOW_PROBABILITY:g}; the redder, the less likely)"

log = logging.getLogger("fm_multi.ui")


@contextmanager
def user_errors(task: str):
    """Run one handler body; re-raise every failure as a gr.Error a user can read."""
    try:
        yield
    except gr.Error:
        raise
    except InputError as e:
        raise gr.Error(str(e), title=f"{task}: bad input", print_exception=False) from None
    except Exception:
        log.exception("%s failed", task)
        raise gr.Error(UNEXPECTED, title=f"{task}: internal error", print_exception=False) from None
    finally:
        release_free_memory()  # the request's tensors are freed: hand their pages back


def token_cap(pipeline, share: float) -> int:
    """Slider cap: the Pipeline's limit, but at most `share` of the context so the prompt still fits."""
    return max(1, min(pipeline.limits.max_new_tokens, int(pipeline.config.max_seq_len * share)))


def file_path(payload) -> str | None:
    """The server-side path of an upload as gradio hands it over with preprocess=False.

    Image tabs skip gradio's own decoding (it would fail on a corrupt file with a generic error) and
    let the Pipeline read the file, so an unreadable upload gets the Pipeline's clear message.
    """
    if payload is None:
        return None
    return payload.get("path") if isinstance(payload, dict) else str(payload)


def explain_box(what: str) -> gr.Checkbox:
    """The per-tab switch; explanations cost extra passes, so they are off until asked for."""
    return gr.Checkbox(False, label="Explain", info=f"also show {what}")


def label_top(payload) -> list[tuple[str, float]]:
    """A gr.Label value as an event input (unprocessed) -> [(label, confidence)], best first."""
    if not isinstance(payload, dict):
        return []
    pairs = [(c["label"], float(c["confidence"])) for c in payload.get("confidences") or []]
    return sorted(pairs, key=lambda lc: -lc[1])


def display_copy(img):
    """An RGB copy of a PIL image no larger than DISPLAY_SIDE on either side."""
    from fm_multi.preprocess import to_rgb

    shown = to_rgb(img)
    shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
    return shown
