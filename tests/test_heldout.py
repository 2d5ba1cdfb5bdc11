"""The held-out-style protocol's pieces: style groups and the matrix table (the full run is in test_cli)."""

from __future__ import annotations

import pytest

from posture.errors import UsageError
from posture.heldout import STYLE_GROUPS, matrix_markdown, parse_groups
from posture.synth import STYLES


def test_style_groups_cover_every_style_once():
    assert sorted(s for g in STYLE_GROUPS for s in g) == sorted(STYLES)


def test_groups_parse():
    assert parse_groups("auto") == parse_groups(None) == STYLE_GROUPS
    assert parse_groups("each") == tuple((s,) for s in STYLES)
    assert parse_groups("flat+shaded,lowres") == (("flat", "shaded"), ("lowres",))
    with pytest.raises(UsageError, match="unknown style"):
        parse_groups("flat+oil")


def test_matrix_markdown_has_one_row_per_group():
    def summary(acc, mae):
        return {"accuracy": acc, "ece": 0.01, "cva_mae": mae, "cam_mass_in_box": 0.55, "pointing_game": 0.9,
                "side_view": {"side_views_flagged": 0.01, "without_flagged": 0.97}}

    matrix = {"styles": {"flat+shaded": {"held_out": summary(0.96, 3.2), "in_style": summary(0.99, 2.5)},
                         "lowres": {"held_out": summary(0.9, 6.0), "in_style": summary(0.985, 2.7)}}}
    table = matrix_markdown(matrix).splitlines()
    assert len(table) == 4 and table[2].startswith("| flat+shaded | 96.0% | 99.0% |")
    assert "3.2 / 2.5 deg" in table[2] and "97.0%" in table[2] and "0.55 / 0.90" in table[2]
