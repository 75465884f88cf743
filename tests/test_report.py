import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from deepfake_cli.report.clip_report import draw_judged, judged_summary, window_positions, write_clip_report
from deepfake_cli.report.tables import format_metric, metrics_table, to_jsonable, write_report
from deepfake_cli.serve.result import PredictResult
from tests.helpers import ASTRONAUT_PROBABILITY, ASTRONAUT_THRESHOLD, ASTRONAUT_VERDICT, ROOT

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


# --- the clip page (`predict --report`): what it says agrees with the CLI's verdict line ---


def _astronaut_result(**changes) -> PredictResult:
    """What the default model gives on examples/astronaut.mp4 (25 fps, 50 frames): 3 windows of 25
    consecutive faces, the verdict the mean of their calibrated P(fake); the tracks shown are the
    most suspicious window's. Its verdict, P(fake) and threshold are tests.helpers'; the windows are made here."""
    spans = [(0, 24, 0.374679), (12, 36, 0.371783), (25, 49, 0.416614)]
    windows = [{"first_frame": a, "last_frame": b, "start_s": round(a / 25, 3), "end_s": round((b + 1) / 25, 3),
                "faces": b - a + 1, "probability": p} for a, b, p in spans]
    fields = dict(path="examples/astronaut.mp4", verdict=ASTRONAUT_VERDICT, probability=ASTRONAUT_PROBABILITY,
                  threshold=ASTRONAUT_THRESHOLD, frames=50, faces=75, tracks=1, clip_frames=50, duration_s=2.0,
                  windows=windows,
                  most_suspicious_window=2, frame_indices=[f for a, b, _ in spans for f in range(a, b + 1)],
                  frame_scores=[0.3] * 75, track_probabilities=[p for _, _, p in spans],
                  track_reports=[{"track": 0, "frames_seen": 25, "face_side": 109.9, "median_box": [0, 0, 1, 1],
                                  "scored": True, "reason": None, "probability": 0.416614}])
    fields.update(changes)
    return PredictResult(**fields)


def _cli_line(result) -> str:
    from deepfake_cli.cli.predict import _print_result

    out = Console(record=True, width=400)
    _print_result(result, out, Console(record=True))
    return out.export_text().strip()


def _one_window(**changes):
    frames = list(range(0, 25))
    return _astronaut_result(faces=25, windows=[{"first_frame": 0, "last_frame": 24, "start_s": 0.0, "end_s": 1.0,
                                                 "faces": 25, "probability": 0.39}], most_suspicious_window=0,
                             frame_indices=frames, frame_scores=[0.2 + 0.01 * i for i in frames], **changes)


@pytest.mark.parametrize("result", [
    _astronaut_result(),
    _one_window(),
    _astronaut_result(faces=2, windows=[], clip_frames=1, duration_s=None),  # an image
    _astronaut_result(faces=0, frames=3, windows=[], clip_frames=90, duration_s=3.0),  # whole frames
], ids=["3 windows", "1 window", "image", "whole frames"])
def test_judged_summary_says_what_the_cli_line_says(result):
    line = _cli_line(result)
    assert f"threshold {ASTRONAUT_THRESHOLD:.3f}, {judged_summary(result)})" in line, line


def test_an_uncertain_line_gives_the_band_and_a_call_gives_the_threshold():
    band = [0.302, ASTRONAUT_THRESHOLD]
    uncertain = _cli_line(_astronaut_result(verdict="uncertain", probability=0.39, uncertain_band=band))
    assert f"uncertain (P(fake) = 0.390, between 0.302 and the threshold {ASTRONAUT_THRESHOLD:.3f}, 75 faces" in uncertain
    called = _cli_line(_astronaut_result(verdict="real", probability=0.25, uncertain_band=band))
    assert f"real (P(fake) = 0.250, threshold {ASTRONAUT_THRESHOLD:.3f}, 75 faces" in called and "between" not in called


def _page(tmp_path, result, aggregation="mean", config=None) -> str:
    info = SimpleNamespace(width=360, height=360, fps=25.0, codec="FMP4", duration_s=2.0, rotation=0,
                           frame_count=50, header_frame_count=None)
    config = config or SimpleNamespace(metrics={}, training={}, name="default", backbone="efficientnet-lite0",
                                       input_size=160, uncertain=[], dfd_version="0", video_aggregation=aggregation)
    return write_clip_report(tmp_path / "r.html", result, info, config, result.frame_indices, None, None).read_text()


def test_the_page_gives_the_model_card_s_validation_figure_and_where_p_was_calibrated(tmp_path):
    from deepfake_cli.nets.bundle import read_config
    from deepfake_cli.nets.card import validation_figures

    shipped = read_config(ROOT / "deepfake_cli" / "serve" / "default_model")
    figures = validation_figures(shipped)  # a CNN-only bundle calibrated out of fold: its CNN's video AUC
    text = _page(tmp_path, _astronaut_result(), config=shipped)
    assert (f"on its validation videos ({figures['real']} real, {figures['fake']} fake): AUC {figures['auc']:.3f}"
            in text) and "no validation figures recorded" not in text
    assert ("calibrated on the out-of-fold scores" in text) == ("crossval" in shipped.metrics)
    assert "no validation figures recorded" in _page(tmp_path, _astronaut_result())


def test_clip_report_verdict_line_is_the_cli_s(tmp_path):
    result = _astronaut_result()
    text = _page(tmp_path, result)
    assert "75 faces in 3 windows of 50 frames (2.0 s)" in _cli_line(result)  # the windows made above
    assert f"(threshold {ASTRONAUT_THRESHOLD:.3f}) &middot; 75 faces in 3 windows of 50 frames (2.0 s)</p>" in text
    assert "in 50 frames of 50" not in text
    assert f"P(fake) = <b>{ASTRONAUT_PROBABILITY:.3f}</b>" in text


def test_clip_report_says_which_window_the_track_table_shows(tmp_path):
    text = _page(tmp_path, _astronaut_result())
    assert "<th>P(fake) in that window</th>" in text and "<td>0.417</td>" in text
    assert "most suspicious window (frames 25–49, 1.00–2.00 s)" in text
    assert f"P(fake) {ASTRONAUT_PROBABILITY:.3f} is the mean of the 3 windows'" in text
    one = _page(tmp_path, _one_window())  # one window: the track's P(fake) is the clip's, said plainly
    assert "<th>P(fake)</th>" in one and "most suspicious window" not in one


def _chart(result, aggregation="mean"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    draw_judged(ax, result, [], aggregation)
    labels = [line.get_label() for line in ax.get_lines()]
    lines = {line.get_label(): line for line in ax.get_lines()}
    plt.close(fig)
    return ax, labels, lines


def test_chart_places_each_window_at_its_time_in_the_clip():
    result = _astronaut_result()
    assert window_positions(result) == pytest.approx([0.48, 0.96, 1.48])  # centre frames 12, 24, 37 at 25 fps
    ax, labels, lines = _chart(result)
    assert ax.get_xlim() == pytest.approx((0.0, 2.0))  # the whole clip, not the windows' starts
    assert "time in the clip (s)" == ax.get_xlabel()
    points = lines["calibrated P(fake) of each window of 25 faces (at its centre)"]
    assert list(points.get_xdata()) == pytest.approx([0.48, 0.96, 1.48])
    assert list(points.get_ydata()) == pytest.approx([0.374679, 0.371783, 0.416614])
    assert all(0 <= x <= 2.0 for x in points.get_xdata())
    assert list(lines["most suspicious"].get_xdata()) == pytest.approx([1.48])
    assert f"threshold {ASTRONAUT_THRESHOLD:.3f}" in labels  # three decimals, as the CLI, not two
    assert ax.get_title() == (f"clip: {ASTRONAUT_VERDICT}, P(fake) {ASTRONAUT_PROBABILITY:.3f}, "
                              "the mean of the 3 windows' P(fake)")
    assert not any("judged frame" in label for label in labels)


def test_chart_of_one_window_shows_face_scores_without_the_threshold():
    ax, labels, lines = _chart(_one_window())
    assert labels == ["CNN score of each face (uncalibrated)"]
    assert list(lines[labels[0]].get_xdata()) == pytest.approx([i / 25 for i in range(25)])
    assert ax.get_xlim() == pytest.approx((0.0, 2.0))
    assert f"{ASTRONAUT_PROBABILITY:.3f}" in ax.get_title() and f"threshold {ASTRONAUT_THRESHOLD:.3f}" in ax.get_title()


def test_chart_of_single_frames_spread_over_the_clip():
    """A bundle scoring each face alone (sampling: uniform): a window per frame, each at its frame's time."""
    frames = [0, 10, 20, 30, 40]
    windows = [{"first_frame": f, "last_frame": f, "start_s": f / 25, "end_s": (f + 1) / 25, "faces": 1,
                "probability": 0.1 * (i + 1)} for i, f in enumerate(frames)]
    result = _astronaut_result(faces=5, frames=5, windows=windows, most_suspicious_window=4, frame_indices=frames)
    ax, labels, lines = _chart(result)
    assert list(lines["calibrated P(fake) of each judged frame"].get_xdata()) == pytest.approx([0, 0.4, 0.8, 1.2, 1.6])
    assert f"threshold {ASTRONAUT_THRESHOLD:.3f}" in labels and ax.get_xlim() == pytest.approx((0.0, 2.0))
    assert judged_summary(result) == "5 faces in 5 frames of 50 (2.0 s)"
