"""Every error dfd raises on purpose derives from DfdError, and carries its exit code.

The command line maps an error to its exit code in one place (deepfake_cli.cli.common); a
Python caller can catch DfdError to handle them all. The codes are the README's "Exit codes"
table. Anything else that escapes a command is a bug in dfd: the command line keeps its
traceback and adds :data:`BUG_NOTE`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # bad store, bad model, nothing could be done
EXIT_USAGE = 2  # bad options (Typer's own code)
EXIT_UNREADABLE = 3  # predict: a video could not be read
EXIT_NO_FACE = 4  # predict: no face found in a video
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, the shell's convention)
EXIT_BAD_SCORE = 5  # the model gave NaN or inf for an input: it is damaged or diverged, no verdict
EXIT_WEAK_EVIDENCE = 6  # predict --strict: a verdict came with a warning (small face, single image, ...)

# Said after the traceback of an exception that is not a DfdError: it was not meant to happen.
BUG_NOTE = ("this is a bug in dfd, not a problem with your files or options: please report it to dfd's "
            "maintainers (the project's issue tracker), with the traceback above and the output of `dfd --version`")


class DfdError(Exception):
    """An error the user is meant to read: the message says what went wrong."""

    exit_code: int = EXIT_ERROR


class OptionsError(DfdError, ValueError):
    """Settings that cannot work, refused before anything is read or written (a ValueError too)."""

    exit_code = EXIT_USAGE


TRAIN_EXTRA = "train"  # pyproject.toml: the frameworks training, evaluation and export need


def install_line(extra: str = TRAIN_EXTRA) -> str:
    """The pip command that brings ``extra`` of dfd."""
    return f"pip install 'deepfake-cli[{extra}]'"


class MissingExtraError(OptionsError):
    """A command needs packages of an extra this install lacks (exit 2): the message names them and
    the pip line that brings them."""

    def __init__(self, what: str, missing: list[str], extra: str = TRAIN_EXTRA):
        super().__init__(f"{what} needs the {extra!r} extra, which this install lacks (no {', '.join(missing)}): "
                         f"{install_line(extra)}")

    @classmethod
    def check(cls, what: str, modules: tuple[str, ...], extra: str = TRAIN_EXTRA) -> None:
        """Raise one when any of ``modules`` cannot be imported (nothing is imported to find out)."""
        import importlib.util

        def importable(module: str) -> bool:
            try:
                return importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                return False

        missing = [m for m in modules if not importable(m)]
        if missing:
            raise cls(what, missing, extra)
