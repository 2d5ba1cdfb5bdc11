"""The documentation stays true to the repository: the files it names exist, its commands parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from posture.__main__ import get_args_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "checkpoints/README.md", "examples/README.md", "benchmarks/README.md"]
# A path into one of the repository's own folders, as the docs write them (`examples/x.jpg`).
REPO_PATH = re.compile(r"(?<![\w/$.-])((?:examples|checkpoints|benchmarks|posture|tests|docs|\.ci)/[\w./-]*\w)")


def _commands(text: str) -> list[str]:
    """The runnable `python -m posture ...` lines of a document's code blocks, continuations joined.

    Usage synopses (with `[optional]` parts or `a|b` alternatives) are not commands and are skipped.
    """
    lines, joined = text.splitlines(), []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1].rstrip() + " " + lines[i].strip()
        if line.startswith("python -m posture ") and not re.search(r"[\[|]", line):
            joined.append(line)
        i += 1
    return joined


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_a_document_names_exists(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    named = {m.rstrip(".") for m in REPO_PATH.findall(text)}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc} names files that do not exist: {missing}"


def test_the_path_check_sees_a_missing_file():
    assert REPO_PATH.findall("run `examples/nobody_here.jpg`, then `$HOME/examples/x`") == ["examples/nobody_here.jpg"]


def test_every_command_the_model_card_shows_is_accepted_by_the_cli():
    doc = "checkpoints/README.md"
    commands = _commands((ROOT / doc).read_text(encoding="utf-8"))
    assert len(commands) >= 10, f"the reproduce commands of {doc} were not found"
    parser = get_args_parser()
    for command in commands:
        argv = shlex.split(command)[3:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{doc}: the CLI rejects `{command}` (exit {exc.code})")


def test_the_command_check_rejects_an_unknown_option():
    (command,) = _commands("    python -m posture evaluate --model m.safetensors \\\n        --data d --no-such-flag\n")
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(shlex.split(command)[3:])
