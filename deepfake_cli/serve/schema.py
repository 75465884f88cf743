"""The result schema: one object per input, the same wherever a result leaves dfd.

`dfd predict --json` (an array of them), `--jsonl` (one per line), `--csv` (one row each, see
:func:`csv_row`), the Python API (:class:`deepfake_cli.Detector`) and the HTTP service
(``POST /v1/predict``) all give :func:`result_record` of a PredictResult. The record is built from
the dataclass's fields, whatever they are, plus the keys that say which schema, dfd and model
made it; docs/output.md documents every key (a test holds the two together).

Rules: a value that is missing is ``null`` (never ``""`` or NaN); numbers keep full precision in
JSON (the CSV rounds them to 6 decimals); :data:`SCHEMA_VERSION` goes up when a key is removed or
changes meaning (adding a key does not change it).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from deepfake_cli.files import file_sha256, to_jsonable

SCHEMA_VERSION = 1
VERDICTS = ("real", "fake", "uncertain")  # a scored input's verdict (scoring.scorer.verdict); "" when it failed
CSV_DECIMALS = 6
IDENTITY_KEYS = ("schema_version", "dfd_version", "model", "model_sha256")  # before the result's own fields
WEIGHT_FILES = ("cnn.weights.h5", "lstm.weights.h5")  # deepfake_cli.nets.bundle's CNN_WEIGHTS, LSTM_WEIGHTS


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made a result: its name and one digest over its weights files (:func:`weights_digest`)."""

    name: str
    sha256: str


def dfd_version() -> str:
    from deepfake_cli import __version__

    return __version__


def weights_digest(bundles, prefix_members: bool = False) -> str:
    """SHA-256 of the ``sha256sum``-style lines ("<digest>  <file>", sorted by file) of the
    bundles' weights files: ``sha256sum cnn.weights.h5 lstm.weights.h5 | sha256sum`` in a bundle's
    folder gives the same. The digests the bundle's config.json records are used (the loaders
    check the files against them), else the files are hashed. ``prefix_members``: an ensemble's
    files are named "<member>/<file>"."""
    lines = []
    for bundle in bundles:
        recorded = dict(getattr(bundle.config, "weights_sha256", {}) or {})
        for name in WEIGHT_FILES:
            path = Path(bundle.path) / name
            digest = recorded.get(name) or (file_sha256(path) if path.is_file() else "")
            if digest:
                lines.append((f"{Path(bundle.path).name}/{name}" if prefix_members else name, digest))
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(lines))
    return hashlib.sha256(text.encode()).hexdigest()


def model_identity(predictor) -> ModelIdentity:
    """The identity of a Predictor's bundle, or of an EnsemblePredictor's ensemble (its members' files)."""
    ensemble = getattr(predictor, "ensemble", None)
    if ensemble is not None:
        return ModelIdentity(str(ensemble.config.name), weights_digest(ensemble.members, prefix_members=True))
    return ModelIdentity(str(predictor.bundle.config.name), weights_digest([predictor.bundle]))


def _null_for_missing(value):
    """"" and NaN (already None after to_jsonable) become None, in nested values too."""
    if isinstance(value, dict):
        return {k: _null_for_missing(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_null_for_missing(v) for v in value]
    return None if value == "" else value


def result_record(result, model: ModelIdentity) -> dict:
    """The schema object of one PredictResult: the identity keys, then every field of the
    dataclass (so fields added to it appear here), JSON-ready."""
    fields = _null_for_missing(to_jsonable(asdict(result)))
    identity = {"schema_version": SCHEMA_VERSION, "dfd_version": dfd_version(), "model": model.name,
                "model_sha256": model.sha256}
    return identity | {k: v for k, v in fields.items() if k not in identity}


CSV_COLUMNS = ["path", "verdict", "probability", "threshold", "cnn_probability", "frames", "faces", "tracks",
               "error", "exit_code", "warnings", *IDENTITY_KEYS]  # the record's flat keys; lists but warnings left out


def csv_cell(value) -> str | int:
    """A value as a CSV cell: floats rounded to 6 decimals, missing ones empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, CSV_DECIMALS))
    return value


def csv_row(record: dict) -> dict:
    """A record (:func:`result_record`, or a plain PredictResult.as_dict()) as one CSV row: the
    columns of :data:`CSV_COLUMNS`, warnings joined by "; "."""
    row = {k: csv_cell(v) for k, v in record.items() if k in CSV_COLUMNS and k != "warnings"}
    row["warnings"] = "; ".join(str(w) for w in record.get("warnings") or [])
    return row
