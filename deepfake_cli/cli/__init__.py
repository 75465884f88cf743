"""The `dfd` command line: Typer commands that parse options, call one core function and render
what it returns (deepfake_cli.cli.app holds the app; cli.data, cli.train, cli.report and
cli.predict the commands by group; cli.common what they share)."""

from deepfake_cli.cli.app import app

__all__ = ["app"]
