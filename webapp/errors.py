"""What a visitor reads when something goes wrong.

The library raises `PostureError` for problems a user can fix; `visitor_errors` turns those
into a `gr.Error` with the library's message (server paths replaced by names the visitor
knows) and no traceback in the log. Anything else is a bug: its traceback goes to the log
and the visitor reads a short apology instead of internals.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from typing import Any, Callable, Mapping

import gradio as gr

from posture.errors import PostureError

__all__ = ["ask", "public_message", "visitor_errors"]

log = logging.getLogger("posture.app")
BUG_MESSAGE = ("Something went wrong on the server while doing that. It has been logged; "
               "please try again, or with another file.")
_hidden_roots: dict[str, str] = {}  # server folders -> the name messages use for them


def hide_folder(path: str, shown_as: str) -> None:
    """Replace `path` (and whatever lies under it, by its last part) in every message from now on."""
    _hidden_roots[str(path).rstrip("/")] = shown_as


def public_message(exc: BaseException, shown_as: Mapping[str, str] | None = None) -> str:
    """The exception's message with server paths replaced: `shown_as` first, then known folders."""
    message = str(exc)
    for path, name in sorted((shown_as or {}).items(), key=lambda kv: -len(kv[0])):
        message = message.replace(str(path), name)
    for root, name in sorted(_hidden_roots.items(), key=lambda kv: -len(kv[0])):
        # A file under a hidden folder is named by its last part: ".../gradio/ab12/photo.jpg" -> "photo.jpg".
        message = re.sub(re.escape(root) + r"/(?:[^/\s'\"]+/)*([^/\s'\"]+)", r"\1", message)
        message = message.replace(root, name)
    return message


def ask(message: str) -> gr.Error:
    """A message for the visitor about something they can do (no traceback logged); raise it."""
    return gr.Error(message, print_exception=False)


def visitor_errors(fn: Callable | None = None, *, shown_as: Callable[..., Mapping[str, str]] | None = None):
    """Decorate a handler: library errors become readable messages, bugs a logged apology.

    Works for plain functions and generators; Gradio still sees the handler's own signature
    (gr.Request and gr.Progress parameters keep working).
    """
    if fn is None:
        return functools.partial(visitor_errors, shown_as=shown_as)

    def translate(exc: BaseException, args: tuple, kwargs: dict) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, PostureError):
            mapping = shown_as(*args, **kwargs) if shown_as else None
            return ask(public_message(exc, mapping))
        log.error("error in %s", fn.__qualname__, exc_info=exc)
        return ask(BUG_MESSAGE)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def run_generator(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted into messages and logged bugs above
                raise translate(exc, args, kwargs) from exc
        return run_generator

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sorted into messages and logged bugs above
            raise translate(exc, args, kwargs) from exc
    return run
