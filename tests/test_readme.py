"""README's code stays true: its "From Python" example runs as written, every command in it passes
lrlab's command-line and config checks, and its contents line links every section by the anchor
GitHub gives its heading."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lrlab.app.cli import command_line_problem, deselect_null_groups
from lrlab.app.lr_free import complete_lr_free_args
from lrlab.app.schema import validate

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


def readme_commands() -> list[list[str]]:
    """Every `lrlab ...` / `torchrun ... -m lrlab ...` line of README's code blocks (continuation
    lines joined, comments dropped)."""
    commands, inside, pending = [], False, None
    for line in README.read_text().splitlines():
        text = line.strip()
        if text.startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        if pending is None and not re.match(r"(lrlab|torchrun) ", text + " "):
            continue
        piece = text.rstrip("\\").strip()
        pending = f"{pending} {piece}" if pending else piece
        if not text.endswith("\\"):
            commands.append(pending)
            pending = None
    return [shlex.split(c, comments=True) for c in commands]


def one_job(words: list[str]) -> list[str] | None:
    """The overrides of one job of a README command: `lrlab` (or torchrun's `-m lrlab`) dropped,
    the first value of each list, a sweep's search spaces and Hydra's own keys left out; None for
    commands that run no job (`--help`, `--cfg`)."""
    args = words[words.index("lrlab") + 1 :]
    if {"--help", "--cfg"} & set(args):
        return None
    job = []
    for arg in (re.sub(r"<\w+>", "a1b2c3", a) for a in args):  # <run_id>: a placeholder to fill in
        key, _, value = arg.partition("=")
        if arg in ("-m", "--multirun") or key.startswith(("hydra.", "hydra/")) or "(" in value:
            continue
        if value and not value.startswith("["):  # a list: its first value, as a sweep's first job
            arg = f"{key}={value.split(',')[0]}"
        job.append(arg)
    return job


PATH_KEYS = ("checkpoint", "input", "resume", "data.root", "model.pretrained")


def _stand_in_file(arg: str, root: Path) -> str:
    """`arg` with the file or folder it names (a README example path) made under `root`: an empty
    file, or a folder where the path ends in `/` or is `data.root`."""
    key, _, value = arg.partition("=")
    if key not in PATH_KEYS or ":/" in value or value == "auto":
        return arg
    target = root / value.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if value.endswith("/") or key == "data.root":
        target.mkdir(exist_ok=True)
    else:
        target.touch()
    return f"{key}={target}"


def test_every_readme_command_passes_the_command_line_and_config_checks(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command a user copies from the README composes and passes lrlab's checks (its keys,
    options and values exist as written), short of running: the files it names are stood in for."""
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 50
    checked = 0
    for words in commands:
        args = one_job(words)
        if args is None:
            continue
        args, _ = complete_lr_free_args(deselect_null_groups(args))
        assert command_line_problem(args, tmp_path) is None, " ".join(words)
        args = [_stand_in_file(arg, tmp_path) for arg in args]
        try:
            validate(compose_cfg(*args))
        except Exception as exc:
            raise AssertionError(f"README command fails its checks: {' '.join(words)}: {exc}") from exc
        checked += 1
    assert checked >= 45
