"""Scale-out: `--shard K/N` runs in parallel, `dfd merge` joins them into the store one run makes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli.app import app
from deepfake_cli.errors import OptionsError
from deepfake_cli.data.shards import Shard, parse_shard
from deepfake_cli.data.store import Store
from tests.helpers import face_frames, tiny_frames, video_entry, write_video

DFD = [sys.executable, "-m", "deepfake_cli"]


def test_parse_shard_and_membership():
    assert parse_shard("2/8") == Shard(2, 8) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "1", "a/b"):
        with pytest.raises(OptionsError, match="--shard must be K/N"):
            parse_shard(bad)
    ids = [f"{i:016x}" for i in range(0, 2**32, 2**26)]
    owners = [[s for s in (Shard(k, 3) for k in (1, 2, 3)) if s.holds(v)] for v in ids]
    assert all(len(o) == 1 for o in owners)  # every video in exactly one shard


def dataset(root):
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            write_video(root / label / f"{label}{i}.mp4", face_frames(6, 96, shift=4 * i + (label == "fake")))
    return root


def arrays(store_path):
    """{(video id, stage): {array name: values}} of a store, for comparing two stores."""
    out = {}
    with Store.open(store_path) as store:
        for e in store.entries():
            frames, faces = store.read_frames(e.video_id), store.read_faces(e.video_id)
            out[e.video_id] = (e.label, e.path, frames.indices.tolist(), frames.pixels.sum(dtype=np.int64),
                               faces.crops.sum(dtype=np.int64), faces.boxes.round(3).tolist())
    return out


def test_two_shards_in_parallel_merge_into_the_unsharded_store(tmp_path):
    data = dataset(tmp_path / "data")
    common = ["--fpv", "4", "--quiet"]
    crop = ["--size", "64", "--device", "cpu", "--quiet"]
    shards = []
    procs = []
    for k in (1, 2):
        store = tmp_path / f"shard{k}.h5"
        shards.append(store)
        script = (f"{' '.join(map(str, DFD))} extract {data} --store {store} --shard {k}/2 {' '.join(common)} && "
                  f"{' '.join(map(str, DFD))} crop --store {store} --shard {k}/2 {' '.join(crop)}")
        procs.append(subprocess.Popen(script, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    whole = tmp_path / "whole.h5"
    runner = CliRunner()
    assert runner.invoke(app, ["extract", str(data), "--store", str(whole), *common]).exit_code == 0
    assert runner.invoke(app, ["crop", "--store", str(whole), *crop]).exit_code == 0
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    sizes = [len(Store.open(s).entries()) for s in shards]
    assert sum(sizes) == 6 and all(sizes)  # each shard did its part, none did everything
    merged = tmp_path / "merged.h5"
    result = runner.invoke(app, ["merge", str(merged), *map(str, shards), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["videos"] == 6
    assert arrays(merged) == arrays(whole)  # same videos, same frames, same faces
    again = json.loads(runner.invoke(app, ["merge", str(merged), *map(str, shards), "--json"]).stdout)
    assert again["copied"] == 0 and again["already_there"] == 12  # idempotent


def test_merge_refuses_two_versions_of_one_segment(tmp_path):
    for name, n in (("a", 3), ("b", 4)):
        with Store.open(tmp_path / f"{name}.h5", write=True) as store:
            store.write_frames(video_entry("v1"), tiny_frames(n=n))
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "out.h5"), str(tmp_path / "a.h5"), str(tmp_path / "b.h5")])
    assert result.exit_code == 1 and "two different versions of one segment" in result.output
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.h5.d").exists()  # nothing made
