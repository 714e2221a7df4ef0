"""What every tab shares: the examples folder and the one way Pipeline errors reach a user.

`user_errors` turns the Pipeline's InputError (its message is written for end users) into a
gr.Error with that message. Anything else is a bug or an outage: it is logged with its traceback
on the server and the user sees one generic sentence, never gradio's "upstream app raised an
exception". Either way the server keeps serving.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from fm_multi.pipeline import InputError

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
UNEXPECTED = ("The model failed on this input because of an internal error (it has been logged). "
              "Please try another input.")

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


def token_cap(pipeline, share: float) -> int:
    """Slider cap: the Pipeline's limit, but at most `share` of the context so the prompt still fits."""
    return max(1, min(pipeline.limits.max_new_tokens, int(pipeline.config.max_seq_len * share)))


def example(name: str) -> str:
    return str(EXAMPLES / name)


def file_path(payload) -> str | None:
    """The server-side path of an upload as gradio hands it over with preprocess=False.

    Image tabs skip gradio's own decoding (it would fail on a corrupt file with a generic error) and
    let the Pipeline read the file, so an unreadable upload gets the Pipeline's clear message.
    """
    if payload is None:
        return None
    return payload.get("path") if isinstance(payload, dict) else str(payload)
