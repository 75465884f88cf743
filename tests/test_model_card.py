"""Every bundle carries a model card (issue 28, item 3): what it was trained on and under which
terms, intended use, limits, validation figures; `dfd models` lists the default and the models
directory with them; train-lstm, evaluate (and `dfd models`) warn when a model's validation set is
tiny or its AUC within noise of 0.5 (item 6); evaluate's tables fit 80 columns (item 6)."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest
from rich.console import Console
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.cli.common import print_table_that_fits
from deepfake_cli.nets.bundle import BundleConfig, read_config
from deepfake_cli.nets.card import (MODEL_CARD_FILE, auc_standard_error, build_card, card_of,
                                    validation_figures, validation_warnings, write_card)
from deepfake_cli.report.tables import metrics_table
from tests.helpers import ASTRONAUT, ASTRONAUT_PROBABILITY, DEFAULT_MODEL_HELD_OUT, ROOT

DEFAULT = ROOT / "deepfake_cli" / "serve" / "default_model"
runner = CliRunner()


def config_with(datasets: list[str], real: int, fake: int, auc: float, **card) -> BundleConfig:
    return BundleConfig(name="m", backbone="efficientnet-lite0", input_size=32, feature_dim=8,
                        training={"datasets": datasets, "train": {"videos": 10}, "val": {"videos": real + fake}},
                        metrics={"val_video_calibrated": {"n_real": real, "n_fake": fake, "auc": auc}}, card=card)


def test_the_default_bundle_carries_its_card_and_still_scores_the_astronaut():
    config = json.loads((DEFAULT / "config.json").read_text())
    card, val = config["card"], validation_figures(read_config(DEFAULT))  # the default's own validation figures
    assert card["training_data"] == ["DFDC (Deepfake Detection Challenge)", "FaceForensics++"]
    assert all("research only" in term for term in card["terms"]) and len(card["terms"]) == 2
    assert "excludes commercial use" in card["landmark_model"]
    assert card["validation"] == val and val["auc"] > 0.5 and min(val["real"], val["fake"]) >= 90
    assert DEFAULT_MODEL_HELD_OUT in card["held_out"] and card == card_of(DEFAULT)  # stored as derived, extras kept
    text = (DEFAULT / MODEL_CARD_FILE).read_text()
    assert "## Terms" in text and "FaceForensics++: research only" in text and DEFAULT_MODEL_HELD_OUT in text
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "default_model/MODEL_CARD.md" in shipped["deepfake_cli.serve"]
    # the card is a config field: the weights' hashes, and so the served model, are unchanged
    [result] = json.loads(runner.invoke(app, ["predict", str(ASTRONAUT), "--json"]).stdout)
    assert result["probability"] == pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6)


def test_dfd_models_lists_the_default_and_the_models_directory(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(DEFAULT, models / "mine", ignore=shutil.ignore_patterns(MODEL_CARD_FILE))
    config = json.loads((models / "mine" / "config.json").read_text())
    config.pop("card")  # a bundle trained before cards: its card is derived when read
    config["training"]["datasets"] = ["csv"]
    config["metrics"]["val_video_calibrated"] = {"n_real": 2, "n_fake": 2, "auc": 0.5}
    (models / "mine" / "config.json").write_text(json.dumps(config))
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text("{")
    rows = json.loads(runner.invoke(app, ["models", "--models-dir", str(models), "--json"]).stdout)
    assert [r["name"] for r in rows] == ["default", "broken", "mine"]
    default, broken, mine = rows
    assert default["default"] and default["backbone"] == "efficientnet-lite0" and default["warnings"] == []
    recorded = validation_figures(read_config(DEFAULT))["auc"]
    assert 0.5 < recorded and default["validation_auc"] == pytest.approx(recorded, abs=1e-9)  # what its config records
    assert any("FaceForensics++: research only" in t for t in default["terms"])
    assert "not valid JSON" in broken["error"]
    assert mine["training_data"] == ["csv"] and "the terms of the data's owner" in mine["terms"][0]
    assert [w.split(" (")[0] for w in mine["warnings"]] == ["its validation set is tiny",
                                                           "its validation AUC 0.500 is within noise of 0.5"]
    table = " ".join(runner.invoke(app, ["models", "--models-dir", str(models)], env={"COLUMNS": "200"}).output.split())
    assert f"{recorded:.3f}" in table and "warning: its validation set is tiny" in table
    assert "DFDC (Deepfake Detection Challenge): research only" in table
    predicted = runner.invoke(app, ["predict", str(ASTRONAUT), "--model", "mine", "--models-dir", str(models), "-q"])
    assert predicted.exit_code == 0 and "warning: model" in predicted.stderr
    assert "its validation AUC 0.500 is within noise of 0.5" in " ".join(predicted.stderr.split())


def test_the_validation_warnings_say_when_a_figure_is_a_sign_not_a_measurement():
    assert validation_warnings(build_card(config_with(["ffpp"], 97, 105, 0.81))) == []
    tiny = validation_warnings(build_card(config_with(["ffpp"], 2, 2, 0.75)))
    assert len(tiny) == 2 and "tiny (2 real, 2 fake videos" in tiny[0] and "within noise" in tiny[1]
    noisy = validation_warnings(build_card(config_with(["ffpp"], 25, 25, 0.55)))
    assert len(noisy) == 1 and "AUC 0.550 is within noise of 0.5" in noisy[0]
    assert validation_warnings(build_card(config_with(["ffpp"], 25, 25, 0.75))) == []  # 0.25 above: a signal
    assert auc_standard_error(0.5, 25, 25) == pytest.approx(0.0825, abs=1e-3)  # Hanley and McNeil's
    assert validation_warnings({"validation": {}}) == ["the model records no validation figures"]


def test_write_card_stores_it_in_config_and_writes_model_card_md(tmp_path):
    from deepfake_cli.nets.bundle import save_config

    save_config(tmp_path, config_with(["dfdc", "own"], 30, 40, 0.9, notes="kept"))
    card = write_card(tmp_path)
    assert read_config(tmp_path).card == card and card["notes"] == "kept"
    assert card["terms"][0].startswith("DFDC (Deepfake Detection Challenge): research only")
    assert card["terms"][1].startswith("own: the terms of the data's owner")
    config = read_config(tmp_path)
    config.metrics["val_video_calibrated"]["auc"] = 0.52  # retrained: the derived fields follow
    save_config(tmp_path, config)
    assert write_card(tmp_path)["validation"]["auc"] == 0.52
    text = (tmp_path / MODEL_CARD_FILE).read_text()
    assert "AUC 0.520" in text and "within noise of 0.5" in text and "## Notes" in text


def test_evaluate_tables_fit_80_columns():
    results = {f"{split} / video / cnn+lstm (calibrated)": {"n": 202, "n_real": 97, "n_fake": 105, "acc": 0.7574,
                                                             "auc": 0.8102, "eer": 0.2474, "ap": 0.8039,
                                                             "logloss": 0.5599, "threshold": 0.3954}
               for split in ("train", "val", "test")}
    narrow = Console(width=80, record=True, file=open("/dev/null", "w"))
    print_table_that_fits(narrow, metrics_table("overall", results))
    text = narrow.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "val / video / cnn+lstm (calibrated)" in text and "auc 0.8102" in text.replace("\n", " ")
    wide = Console(width=250, record=True, file=open("/dev/null", "w"))
    print_table_that_fits(wide, metrics_table("overall", results))
    text = wide.export_text()
    assert "┃" in text and "0.8102" in text  # the table, where it fits
