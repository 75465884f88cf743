"""Which weights a bundle vouches for: the SHA-256 of each weights file it serves, recorded in its
config.json by training (nets.bundle.record_weights_hashes) and checked on every load.

A bundle that records no hash for a file it serves (trained before hashes existed, or put
together by hand) is refused by every serving path (deepfake_cli.serve.model_choice.model_runtime,
:func:`require_recorded_hashes`), since damage to its weights would go unnoticed; `dfd check-model
BUNDLE --trust` (:func:`trust_weights`) loads such files and records their hashes, and never
replaces a recorded one.
"""

from __future__ import annotations

from pathlib import Path

from deepfake_cli.files import file_sha256
from deepfake_cli.nets.bundle import (CNN_WEIGHTS, CONFIG_FILE, LSTM_WEIGHTS, Bundle, BundleError, load_bundle,
                                     save_config)


def served_weights(bundle: Bundle) -> list[str]:
    """The weights files a bundle's scores come from: its CNN's, and its LSTM's once trained."""
    return [CNN_WEIGHTS] + ([LSTM_WEIGHTS] if bundle.has_lstm else [])


def unhashed_weights(bundle: Bundle) -> list[str]:
    """The weights files the bundle serves whose SHA-256 its config.json does not record."""
    return [name for name in served_weights(bundle) if not bundle.config.weights_sha256.get(name)]


def trust_command(bundle_dir: Path) -> str:
    """The command that records the hashes of a bundle's weights (`dfd check-model --trust`)."""
    return f"dfd check-model {bundle_dir} --trust"


def require_recorded_hashes(bundle: Bundle) -> None:
    """Raise BundleError when the bundle serves weights whose SHA-256 it does not record (a bundle
    trained before hashes existed, or put together by hand): damage to them could not be noticed."""
    missing = unhashed_weights(bundle)
    if missing:
        raise BundleError(f"model bundle {bundle.path}: its {CONFIG_FILE} records no SHA-256 for "
                          f"{' or '.join(missing)}, so damaged weights would go unnoticed; if you trust these "
                          f"files, record their hashes with `{trust_command(bundle.path)}`")


def weights_status(bundle: Bundle) -> dict[str, str]:
    """{served weights file: 'ok' | 'no hash recorded' | 'missing' | 'changed or damaged'}."""
    status = {}
    for name in served_weights(bundle):
        path, recorded = bundle.path / name, bundle.config.weights_sha256.get(name)
        if not path.is_file():
            status[name] = "missing"
        elif not recorded:
            status[name] = "no hash recorded"
        else:
            status[name] = "ok" if file_sha256(path) == recorded else "changed or damaged"
    return status


def trust_weights(bundle_dir: Path) -> dict[str, str]:
    """Record in ``config.json`` the SHA-256 of each served weights file that has none, once
    building the bundle's models (which reads every weight) has shown they load; returns {file:
    hash} of those recorded. A recorded hash is never replaced: a file that differs from its hash
    stays refused (BundleError)."""
    bundle = load_bundle(bundle_dir)
    status = weights_status(bundle)
    bad = {name: why for name, why in status.items() if why in ("missing", "changed or damaged")}
    if bad:
        raise BundleError("; ".join(f"{bundle.path / name}: {why}" for name, why in bad.items())
                          + " (--trust records the hashes of files that have none; it never replaces one)")
    todo = [name for name, why in status.items() if why == "no hash recorded"]
    if not todo:
        return {}
    hashes = {name: file_sha256(bundle.path / name) for name in todo}
    bundle.build_feature_model()  # a file that cannot be read is refused here, before any hash is recorded
    if bundle.has_lstm:
        bundle.build_lstm()
    bundle.config.weights_sha256 = {**bundle.config.weights_sha256, **hashes}
    save_config(bundle.path, bundle.config)
    return hashes
