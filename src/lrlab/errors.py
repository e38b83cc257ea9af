"""User-facing errors: raised for bad input, printed as one paragraph without a traceback."""

import difflib
import textwrap


class LrlabError(Exception):
    """A problem the user can fix (bad config value, missing data, unavailable weights); the CLI
    prints it as one paragraph and exits with `exit_status`."""

    exit_status = 2  # bad input


class NothingDone(LrlabError):
    """The work ran but produced nothing (e.g. no input image could be read): exit status 1."""

    exit_status = 1


class ConfigError(LrlabError):
    """The composed configuration has a bad key, type or value."""


def describe(exc: BaseException, width: int = 300) -> str:
    """`TypeName: message` of a caught library exception, on one line and at most `width`
    characters, to quote inside a one-paragraph error (some messages span lines: a download's
    reason sits on its second)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return textwrap.shorten(text, width=width, placeholder=" ...")


def check_choice(value: object, allowed: tuple[str, ...], key: str) -> str:
    """`value` as text when it is one of `allowed`; else ConfigError naming `key` and the choices
    (the one message for a bad choice, whichever layer checks it)."""
    text = str(value)
    if text not in allowed:
        close = difflib.get_close_matches(text, allowed, n=2, cutoff=0.6)
        hint = f" (closest: {', '.join(close)})" if close else ""
        # a YAML boolean as typed (true), also where a str field has made it the text 'True'
        shown = text.lower() if text in ("True", "False") else repr(value)
        raise ConfigError(f"{key}={shown} is not valid; choose one of: {', '.join(allowed)}{hint}.")
    return text


class TrainingDiverged(LrlabError):
    """The training loss became NaN or infinite: a result of the settings (usually too high an LR),
    which a sweep records as a pruned trial rather than a failure to retry."""


class RunPruned(Exception):
    """A sweep's pruner stopped this run early (raised by the trial reporter; the run ends KILLED
    and its trial PRUNED). Not an LrlabError: nothing was wrong with the input."""


def disk_full(exc: BaseException) -> OSError | None:
    """The "no space left on device" error behind `exc` (itself, or what it was raised from or
    while handling: torch.save reports it as a RuntimeError), or None."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
