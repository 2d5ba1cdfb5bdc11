"""The models a visitor can pick: the bundled ones (loaded once, shared read-only) and their own.

Pickers in every tab and the Models table come from here, so they always agree.
"""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from posture.catalog import CheckpointSummary, summarize_checkpoint
from posture.predict import Predictor
from webapp.errors import ask
from webapp.render import escape
from webapp.session import Session
from webapp.settings import Settings

__all__ = ["TABLE_COLUMNS", "ModelList"]

TABLE_COLUMNS = ["model", "origin", "architecture", "classes", "input (px)", "outputs", "metrics"]
_OUTPUT_NAMES = {"cva": "CVA", "side_view": "side view"}


class ModelList:
    """Bundled checkpoints from the settings' folder plus each session's own models."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: dict[tuple[str, float], Predictor] = {}  # (path, mtime) -> the one shared copy
        self._lock = threading.Lock()

    def bundled(self) -> dict[str, Path]:
        """Name -> path of every bundled checkpoint (the file stem is the name)."""
        folder = self.settings.checkpoints
        return {p.stem: p for p in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}

    def names(self, session: Session) -> list[str]:
        """Every model this session can use: bundled first, then the visitor's own."""
        bundled = self.bundled()
        return list(bundled) + [n for n in session.models if n not in bundled]

    def choices(self, session: Session) -> list[tuple[str, str]]:
        """(label, name) pairs for a picker: "resnet18 (bundled)", "mine (yours)"."""
        bundled = self.bundled()
        return [(f"{n} (bundled)", n) for n in bundled] + [
            (f"{n} (yours)", n) for n in session.models if n not in bundled]

    def default(self, prefer: str = "resnet18") -> str | None:
        """The model a picker starts on: `prefer` when bundled, else the first bundled one."""
        names = list(self.bundled())
        return prefer if prefer in names else (names[0] if names else None)

    def second(self, prefer: str = "resnet14") -> str | None:
        """Compare's model B: another bundled model than the default (`prefer` when bundled)."""
        first, names = self.default(), list(self.bundled())
        if prefer in names and prefer != first:
            return prefer
        return next((n for n in names if n != first), first)

    def path(self, name: str | None, session: Session) -> Path:
        """The checkpoint file of the model called `name` in this session (the visitor's own first)."""
        if not name:
            raise ask("Choose a model first.")
        path = session.models.get(name) or self.bundled().get(name)
        if path is None:
            known = ", ".join(self.names(session)) or "none"
            raise ask(f"Unknown model {name!r}. Models available in this session: {known}.")
        return path

    def predictor(self, name: str | None, session: Session) -> Predictor:
        """The model called `name` in this session: the visitor's own first, then a bundled one."""
        if not name:
            raise ask("Choose a model first.")
        if name in session.models:
            if name not in session.predictors:
                session.predictors[name] = self._load(session.models[name], name)
            return session.predictors[name]
        path = self.bundled().get(name)
        if path is None:
            known = ", ".join(self.names(session)) or "none"
            raise ask(f"Unknown model {name!r}. Models available in this session: {known}.")
        key = (str(path), path.stat().st_mtime)
        with self._lock:  # each bundled checkpoint is loaded once and shared read-only by all sessions
            if key not in self._loaded:
                self._loaded[key] = self._load(path, name)
            return self._loaded[key]

    def _load(self, path: Path, name: str) -> Predictor:
        predictor = Predictor.from_checkpoint(path, precision=self.settings.precision, device=self.settings.device,
                                              mirror=self.settings.mirror)
        predictor.name = name
        return predictor

    def summaries(self, session: Session) -> list[tuple[CheckpointSummary, str]]:
        """(summary, origin) for every model this session can use."""
        out = [(summarize_checkpoint(n, p), "bundled") for n, p in self.bundled().items()]
        return out + [(summarize_checkpoint(n, p), "yours (this session)") for n, p in session.models.items()]

    def records(self, session: Session) -> list[dict]:
        """Every model this session can use, as JSON records (the API's view of the Models tab)."""
        out = []
        for summary, origin in self.summaries(session):
            record = summary.to_dict()
            record.pop("path")  # where the server keeps it is not the visitor's business
            out.append({"origin": origin, **record})
        return out

    def table_html(self, session: Session) -> str:
        """The Models tab's table: one row per model with what its checkpoint says; cards on a phone."""
        head = "".join(f"<th>{escape(c)}</th>" for c in TABLE_COLUMNS)
        rows = []
        for s, origin in self.summaries(session):
            if s.error:
                cells = [s.name, origin, "unreadable", s.error, "", "", ""]
            else:
                outputs = ", ".join(["class", *[_OUTPUT_NAMES.get(h, h) for h in s.heads]])
                cells = [s.name, origin, s.arch, ", ".join(s.class_names), str(s.input_size), outputs, s.metrics_text]
            rows.append("<tr>" + "".join(f'<td data-label="{escape(c)}">{escape(str(v))}</td>'
                                         for c, v in zip(TABLE_COLUMNS, cells)) + "</tr>")
        if not rows:
            rows.append(f'<tr><td colspan="{len(TABLE_COLUMNS)}">No models yet: add or train one.</td></tr>')
        return f'<table class="models"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'

    def pickers(self, session: Session, count: int) -> list[gr.Dropdown]:
        """`count` refreshed model pickers (their chosen values kept where still valid)."""
        return [gr.Dropdown(choices=self.choices(session)) for _ in range(count)]
