"""Progress inside a training epoch (issue 28, item 5): train.loop calls the epoch callback's
on_batch after every batch when it has one (the command line draws a bar with the time left from
it), and trains the same without one."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from deepfake_cli.cli.common import EpochProgress


class Batches:
    """Three batches of a two-feature problem, as the loop's PyDataset (set_epoch, len, items)."""

    def __new__(cls):
        import keras

        class Data(keras.utils.PyDataset):
            def __init__(self):
                super().__init__()
                rng = np.random.default_rng(0)
                self.x = rng.normal(size=(12, 2)).astype("float32")
                self.y = (self.x[:, :1] > 0).astype("float32")

            def set_epoch(self, key):
                self.key = key

            def __len__(self):
                return 3

            def __getitem__(self, i):
                return self.x[4 * i:4 * i + 4], self.y[4 * i:4 * i + 4]

        return Data()


def loop_with(on_epoch, tmp_path):
    import keras

    from deepfake_cli.train.loop import Checkpoints, Loop

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return Loop(model=model, train=Batches(), evaluate=lambda m: {}, checkpoints=Checkpoints(tmp_path),
                final_weights=tmp_path / "w.weights.h5", tag={}, patience=1, seed=0, on_epoch=on_epoch)


def test_the_loop_reports_each_batch_to_an_on_batch_hook_and_trains_the_same_without(tmp_path):
    from deepfake_cli.train.loop import train_one_epoch

    calls = []

    class Hook:
        def __call__(self, info):
            pass

        def on_batch(self, done, total, loss):
            calls.append((done, total, loss))

    with_hook = loop_with(Hook(), tmp_path)
    loss, _ = train_one_epoch(with_hook, 0, {"phase_epoch": 0})
    assert [(d, t) for d, t, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert all(np.isfinite(v) for _, _, v in calls) and calls[-1][2] == np.float32(loss)
    plain = loop_with(lambda info: None, tmp_path)  # a plain function: no hook, the same training
    assert train_one_epoch(plain, 0, {"phase_epoch": 0})[0] == loss
    assert np.array_equal(plain.model.get_weights()[0], with_hook.model.get_weights()[0])


def test_epoch_progress_draws_a_bar_inside_the_epoch_then_the_epoch_line():
    buffer = io.StringIO()
    err = Console(file=buffer, width=120, force_terminal=False)
    lines = []
    progress = EpochProgress(err, quiet=False, line=lambda info: lines.append(info["epoch"]))
    for done in (1, 2, 3):
        progress.on_batch(done, 3, 0.5)
    progress({"epoch": 1})
    assert "batches" in buffer.getvalue() and "3/3" in buffer.getvalue() and "loss 0.5000" in buffer.getvalue()
    assert lines == [1] and progress.bar.progress is None
    quiet = io.StringIO()
    silent = EpochProgress(Console(file=quiet, quiet=True), quiet=True, line=lambda info: None)
    silent.on_batch(1, 3, 0.5)
    silent({"epoch": 1})
    assert quiet.getvalue() == ""
