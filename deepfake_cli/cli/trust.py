"""`dfd check-model`: whether a model's weights files are the ones its config.json vouches for,
and, with --trust, the one way to vouch for files that have no recorded hash.

`dfd predict` refuses a bundle whose config.json records no SHA-256 for a weights file it serves
(nets.weights_trust.require_recorded_hashes): training records them, but a bundle trained before hashes
existed, or put together by hand, has none, and damage to its weights would go unnoticed.
`--trust` loads each such file into its model (a file that cannot be read is refused), then
records its hash and prints it; a hash already recorded is never replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from deepfake_cli.cli.common import (JsonOption, ModelsDirOption, QuietOption, consoles, fail, handled,
                                     import_keras_quietly, print_json)
from deepfake_cli.errors import EXIT_ERROR, EXIT_OK


@handled
def check_model(
    model: Optional[str] = typer.Argument(None, help="Bundle or ensemble, by name or directory.",
                                          show_default="the bundled model"),
    trust: bool = typer.Option(False, "--trust", help="Record the SHA-256 of each weights file that has none "
                               "(after loading it), so that `dfd predict` serves it; prints what it hashed."),
    models_dir: Path = ModelsDirOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Check a model's weights files against the SHA-256 its config.json records (exit 1 if one is not)."""
    from deepfake_cli.nets.bundle import load_bundle
    from deepfake_cli.nets.weights_trust import trust_weights, unhashed_weights, weights_status
    from deepfake_cli.scoring.ensemble import model_bundles
    from deepfake_cli.serve.model_choice import locate_model

    out, _ = consoles(quiet)
    path = locate_model(model, models_dir, packaged=not trust)  # --trust writes: the packaged model by path only
    bundles = model_bundles(path)
    recorded: dict[str, str] = {}
    if trust:
        if any(unhashed_weights(b) for b in bundles):
            import_keras_quietly("dfd check-model --trust")  # it loads the files it is asked to trust
        for bundle in bundles:
            recorded.update({str(bundle.path / name): sha for name, sha in trust_weights(bundle.path).items()})
    status = {str(b.path / name): why for b in (load_bundle(b.path) for b in bundles)
              for name, why in weights_status(b).items()}
    code = EXIT_OK if all(why == "ok" for why in status.values()) else EXIT_ERROR
    if as_json:
        print_json({"model": str(path), "files": status, "recorded": recorded})
        raise typer.Exit(code)
    for file, sha in recorded.items():  # shown under --quiet too: what was vouched for
        typer.echo(f"recorded SHA-256 of {file}: {sha}")
    for file, why in status.items():
        out.print(f"{escape(file)}: {escape(why)}", highlight=False, soft_wrap=True)
    if code != EXIT_OK:
        hint = (f"; if you trust the files without a hash, `dfd check-model {path} --trust` records theirs"
                if any(why == "no hash recorded" for why in status.values()) else "")
        fail(f"{sum(why != 'ok' for why in status.values())} weights file(s) of {path} cannot be vouched "
             f"for{hint}", code)
    raise typer.Exit(code)
