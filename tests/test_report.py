import csv
import json
import math

import numpy as np
import pytest
from rich.console import Console

from deepfake_cli.report.tables import format_metric, metrics_table, to_jsonable, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(video_id, split, label, score, method=""):
    return {
        "video_id": video_id,
        "split": split,
        "level": "video",
        "model": "cnn+lstm",
        "label": label,
        "score": score,
        "dataset": "ffpp",
        "method": method,
        "compression": "c23",
    }


def _rows():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        fake = i % 3 != 0
        method = ("Deepfakes", "FaceSwap")[i % 2] if fake else ""
        score = float(np.clip(rng.normal(0.7 if fake else 0.3, 0.2), 0, 1))
        rows.append(_row(f"v{i:02d}", "test", int(fake), score, method))
    # a split holding only reals: no ROC possible
    rows += [_row(f"r{i}", "extra", "real", 0.1 * i) for i in range(5)]
    return rows


NAN = float("nan")
RESULTS = {
    "test / video / cnn+lstm": dict(
        n=30, n_real=10, n_fake=20, acc=0.8, auc=np.float64(0.91234), eer=0.15, ap=0.95,
        logloss=0.41, threshold=0.5,
    ),
    "extra / video / cnn+lstm": dict(
        n=5, n_real=5, n_fake=0, acc=0.6, auc=NAN, eer=NAN, ap=NAN, logloss=0.7, threshold=0.5
    ),
}
CSV_HEADER = ["video_id", "split", "level", "model", "label", "score", "dataset", "method",
              "compression"]


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_SIGNATURE)


def test_write_report_writes_json_csv_and_plots(tmp_path):
    out = tmp_path / "report" / "nested"
    rows = _rows()
    paths = write_report(out, {"video": RESULTS, "calibration": {"temperature": 1.3}}, rows)
    names = sorted(p.name for p in paths)
    expected = ["metrics.json", "scores.csv", "roc_test_video_cnn+lstm.png"]
    expected += ["scores_test_video_cnn+lstm.png", "scores_extra_video_cnn+lstm.png"]
    assert names == sorted(expected)
    assert all(p.parent == out and p.is_file() for p in paths)

    text = (out / "metrics.json").read_text()
    assert "NaN" not in text
    data = json.loads(text)
    extra = data["video"]["extra / video / cnn+lstm"]
    assert extra["auc"] is None and extra["n_real"] == 5
    assert data["video"]["test / video / cnn+lstm"]["auc"] == pytest.approx(0.91234)
    assert data["calibration"]["temperature"] == 1.3

    with (out / "scores.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        read = list(reader)
    assert reader.fieldnames == CSV_HEADER
    assert len(read) == len(rows)
    assert read[0]["video_id"] == "v00" and float(read[0]["score"]) == rows[0]["score"]

    for p in paths:
        if p.suffix == ".png":
            assert _is_png(p), p


def test_one_class_only_skips_roc_cleanly(tmp_path):
    row = {"split": "val", "level": "frame", "model": "cnn", "label": 1}
    rows = [{**row, "score": s} for s in (0.2, 0.7, 0.9)]
    paths = write_report(tmp_path, {}, rows)
    names = sorted(p.name for p in paths)
    assert names == ["metrics.json", "scores.csv", "scores_val_frame_cnn.png"]
    assert not list(tmp_path.glob("roc_*"))
    assert json.loads((tmp_path / "metrics.json").read_text()) == {}


def test_write_report_tolerates_missing_keys_and_bad_scores(tmp_path):
    rows = [
        {"label": 0, "score": 0.2, "extra": "x"},
        {"label": 1, "score": 0.8},
        {"label": 1, "score": None},
        {"label": 0, "score": NAN},
    ]
    paths = write_report(tmp_path, {"x": {"auc": float("inf")}}, rows)
    assert {p.name for p in paths} >= {"roc_all_all_all.png", "scores_all_all_all.png"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"x": {"auc": None}}
    header = (tmp_path / "scores.csv").read_text().splitlines()[0]
    assert header == "label,score,extra"


def test_write_report_with_no_rows(tmp_path):
    paths = write_report(tmp_path, RESULTS, [])
    assert [p.name for p in paths] == ["metrics.json", "scores.csv"]
    assert (tmp_path / "scores.csv").read_text().strip() == ",".join(CSV_HEADER)


def test_metrics_table_renders():
    console = Console(record=True, width=120)
    console.print(metrics_table("Evaluation", RESULTS))
    text = console.export_text()
    assert "Evaluation" in text
    assert "test / video / cnn+lstm" in text and "extra / video / cnn+lstm" in text
    assert "0.9123" in text and "0.8000" in text and "0.4100" in text
    assert "–" in text
    assert " 30 " in text and " 20 " in text
    assert "30.0000" not in text
    for column in ("n_real", "auc", "eer", "logloss", "threshold"):
        assert column in text


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("n", 12, "12"),
        ("n_fake", 3.0, "3"),
        ("auc", 0.123456, "0.1235"),
        ("auc", NAN, "–"),
        ("eer", None, "–"),
        ("acc", np.float32(1), "1.0000"),
    ],
)
def test_format_metric(name, value, expected):
    assert format_metric(name, value) == expected


def test_to_jsonable():
    value = {"a": (np.int64(2), np.float32(0.5), math.nan), "b": np.array([1.0, np.inf])}
    assert to_jsonable(value) == {"a": [2, 0.5, None], "b": [1.0, None]}
