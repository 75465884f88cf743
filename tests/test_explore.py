"""`dfd explore`: balance, distributions, contact sheets and warnings, on data made here."""

from __future__ import annotations

import json

import cv2
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.data.store import Store, VideoEntry
from tests.helpers import face_frames, shared_data, tiny_faces, tiny_frames, write_video


def entry(vid, label, split, method="", identities="", **kw):
    return VideoEntry(video_id=vid, path=f"/videos/{vid}.mp4", label=label, split=split, dataset="ffpp",
                      method=method, compression="c23", identities=identities, fps=25.0, frame_count=250,
                      height=48, width=64, **kw)


def make_store(path):
    with Store.open(path, write=True) as store:
        videos = [entry("r1", "real", "train", identities="ffpp:001"), entry("f1", "fake", "train", "Deepfakes",
                                                                             "ffpp:001,ffpp:002"),
                  entry("f2", "fake", "val", "Deepfakes", "ffpp:002"),  # val: fakes only; 002 in two splits
                  entry("f3", "fake", "val", "Face2Face", "ffpp:003")]
        for v in videos:
            store.write_frames(v, tiny_frames(n=4, h=48, w=64))
            store.write_faces(v.video_id, tiny_faces(n=1 if v.video_id == "f3" else 4, size=32))  # f3: 1 of 4 frames
    return path


def test_explore_a_store(tmp_path):
    store = make_store(tmp_path / "s.h5")
    result = CliRunner().invoke(app, ["explore", "--store", str(store), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["videos"] == 4 and report["balance"]["dataset"] == {"ffpp": {"real": 1, "fake": 3}}
    assert report["balance"]["split"]["ffpp/val"] == {"fake": 2}
    assert report["balance"]["method"]["ffpp/Deepfakes"] == {"fake": 2}
    warnings = "\n".join(report["warnings"])
    assert "ffpp val split holds only fake videos" in warnings
    assert "1 identities appear in more than one split (e.g. ffpp:002)" in warnings
    assert "1 videos have their face in under 50% of their frames (e.g. f3.mp4)" in warnings
    out = tmp_path / "out"
    assert json.loads((out / "summary.json").read_text())["videos"] == 4
    assert cv2.imread(str(out / "histograms.png")) is not None
    sheet = cv2.imread(str(out / "sheet_fake_ffpp-Deepfakes.png"))
    assert sheet.shape == (2 * 128, 3 * 128, 3)  # two videos: [frame (2 tiles wide) | face]
    assert sheet[:, 256:].max() > 0  # the face crops are drawn
    assert sorted(p.name for p in out.glob("sheet_*.png")) == ["sheet_fake_ffpp-Deepfakes.png",
                                                               "sheet_fake_ffpp-Face2Face.png", "sheet_real_ffpp.png"]


def test_explore_files_before_extract(tmp_path):
    for label, n in (("real", 2), ("fake", 1)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(n):
            write_video(tmp_path / "data" / label / f"{label}{i}.mp4", face_frames(3, 64))
    result = CliRunner().invoke(app, ["explore", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert report["videos"] == 3 and report["balance"]["dataset"] == {"folders": {"real": 2, "fake": 1}}
    assert "folders" in result.output and "real" in result.output


@pytest.mark.realdata
def test_explore_the_real_ffpp_layout(tmp_path):
    ffpp = shared_data("ffpp")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explore", str(ffpp), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    balance = report["balance"]
    assert report["videos"] == sum(balance["dataset"]["ffpp"].values()) > 100
    assert set(balance["compression"]) == {"ffpp/c23", "ffpp/c40"}
    assert {"ffpp/Deepfakes", "ffpp/NeuralTextures"} <= set(balance["method"])
    assert (out / "summary.json").is_file()
