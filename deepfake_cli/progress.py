"""How core functions report progress without knowing about the terminal."""

from __future__ import annotations


class Reporter:
    """Silent reporter; the CLI passes one that draws rich progress bars."""

    def start(self, total: int, description: str) -> None:
        """A loop over `total` items begins."""

    def advance(self, item: str = "") -> None:
        """One item of the current loop is done."""

    def warn(self, message: str) -> None:
        """Something the user should know about, that does not stop the run."""

    def finish(self) -> None:
        """The current loop ended."""
