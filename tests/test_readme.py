"""README's code stays true: its "From Python" example runs as written, and its contents line
links every section by the anchor GitHub gives its heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_block(section: str) -> str:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match, f"no python block under '## {section}'"
    return match.group(1)


def test_from_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(_python_block("From Python"), "README.md", "exec"), {})
    for picture in ("lr_find.png", "train_batch.png", "training_curves.png"):
        assert (tmp_path / picture).stat().st_size > 10_000, picture
    lines = capsys.readouterr().out.strip().splitlines()
    assert 0.0 <= float(lines[-2]) < 0.9
    assert lines[-1] == "torch.Size([360])"  # the digits test split: 20% of 1,797


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_contents_line_links_every_section() -> None:
    text = README.read_text()
    contents = next(line for line in text.splitlines() if line.startswith("Contents: "))
    linked = re.findall(r"\]\(#([^)]+)\)", contents)
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert linked == [_anchor(h) for h in sections]
    assert _anchor("Quick start (fresh machine, Python >= 3.11)") == "quick-start-fresh-machine-python--311"
