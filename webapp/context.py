"""What every tab builds on: settings, the model list, the session state and the shared pickers.

Tabs are built in order inside one `gr.Blocks`; components another tab updates (the model
pickers, the Models table) are registered here so that handlers can return updates for all
of them as one tuple in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from webapp.models import ModelList
from webapp.session import Session
from webapp.settings import Settings

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """Shared by the tab builders; `model_outputs` lists the components `model_updates` refreshes."""

    settings: Settings
    models: ModelList
    session: gr.State
    pickers: dict[str, gr.Dropdown] = field(default_factory=dict)  # tab -> its model picker
    own_models: gr.Dropdown | None = None  # the Models tab's picker of the visitor's own models
    models_table: gr.HTML | None = None
    models_json: gr.JSON | None = None
    tabs: gr.Tabs | None = None

    @property
    def model_outputs(self) -> list[gr.components.Component]:
        """Pickers, the own-models picker, the table and its JSON, in the order `model_updates` returns them."""
        return [*self.pickers.values(), self.own_models, self.models_table, self.models_json]

    def model_updates(self, session: Session, select: dict[str, str] | None = None,
                      own: str | None = None) -> tuple:
        """Updates for `model_outputs`: fresh choices; `select` picks a model in some tabs' pickers."""
        choices = self.models.choices(session)
        names = self.models.names(session)
        select = select or {}
        updates = []
        for tab in self.pickers:
            if tab in select:
                updates.append(gr.Dropdown(choices=choices, value=select[tab]))
            else:
                updates.append(gr.Dropdown(choices=choices))
        mine = [n for n in session.models if n in names]
        chosen = own if own in mine else (mine[-1] if mine else None)
        updates.append(gr.Dropdown(choices=mine, value=chosen))
        updates.append(self.models.table_html(session))
        updates.append(self.models.records(session))
        return tuple(updates)
