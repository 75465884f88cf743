"""Training batches of stored face crops: lazy, seeded, augmented, optionally with pseudo-fakes.

:class:`FaceDataset` feeds Keras ``fit``/``predict`` with (x, y[, sample_weight]) batches read
from the store; the (video_id, row) index of the faces is all it holds, plus an LRU of a few
decoded videos. Order, augmentation and pseudo-fakes of an epoch derive from the key given to
:meth:`FaceDataset.set_epoch`, so a resumed run replays exactly. Model inputs are made by
deepfake_cli.scoring.scorer.model_input, as in serving.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import keras
import numpy as np

from deepfake_cli.train import TrainingDataError
from deepfake_cli.train.augment import augment_face
from deepfake_cli.data.inputs import has_images, stored_images, training_rows
from deepfake_cli.train.pseudo import KINDS, PseudoFakes, mix_shares
from deepfake_cli.scoring.scorer import model_input
from deepfake_cli.data.store import ROLE_SPREAD, Store


def pick_rows(count: int, limit: int | None) -> list[int]:
    """Rows 0..count-1, or ``limit`` of them evenly spread."""
    if limit is None or count <= limit:
        return list(range(count))
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, limit)})


def index_faces(store: Store, video_ids: list[str], limit: int | None = None,
                input_kind: str = "face") -> list[tuple[str, int]]:
    """(video_id, row) for every usable face (or, for a frame model, frame) of the given videos
    (videos without any skipped): the ones extract spread over each video when it stored some
    (``inputs.training_rows``), at most ``limit`` of them evenly spread."""
    items = []
    for vid in video_ids:
        if has_images(store, vid, input_kind):
            rows = training_rows(store, vid, input_kind)
            items.extend((vid, int(rows[i])) for i in pick_rows(len(rows), limit))
    return items


CACHE_BUDGET_BYTES = 3 << 30  # decoded training images kept in memory (all of them, when they fit)


def cache_size(store: Store, video_ids: list[str], input_kind: str, input_size: int,
               budget: int = CACHE_BUDGET_BYTES) -> int:
    """How many videos' training images fit in ``budget`` bytes (all of them when they fit):
    the training order is a plain shuffle when every video fits, else windowed (see
    :func:`windowed_order`)."""
    ids = list(dict.fromkeys(video_ids))
    if not ids:
        return 2
    side = int(store.faces_settings(ids[0]).get("size", input_size)) if input_kind == "face" else input_size
    rows = [len(training_rows(store, vid, input_kind)) for vid in ids]
    per_video = max(1.0, float(np.mean(rows))) * side * side * 3
    return max(2, min(len(ids), int(budget // per_video)))


def shuffled_order(items: list[tuple[str, int]], rng: np.random.Generator,
                   cached_videos: int) -> list[tuple[str, int]]:
    """This epoch's training order: a plain shuffle when the cache holds every video, so each
    batch is a random draw of the faces (batch-norm in training mode computes its statistics on
    it: batches of a few videos each, as a windowed order makes, hardly train, see
    models/default/README.md); else :func:`windowed_order` over windows of half the cache."""
    if len({vid for vid, _ in items}) <= cached_videos:
        return [items[i] for i in rng.permutation(len(items))]
    return windowed_order(items, rng, max(1, cached_videos // 2))


def windowed_order(items: list[tuple[str, int]], rng: np.random.Generator,
                   window: int) -> list[tuple[str, int]]:
    """Shuffle videos, then shuffle faces within windows of ``window`` videos.

    Batches then touch few videos at a time, so a small cache of decoded videos suffices
    (for training sets larger than memory).
    """
    by_video: dict[str, list[tuple[str, int]]] = OrderedDict()
    for item in items:
        by_video.setdefault(item[0], []).append(item)
    videos = list(by_video)
    rng.shuffle(videos)
    order: list[tuple[str, int]] = []
    for start in range(0, len(videos), window):
        chunk = [item for vid in videos[start:start + window] for item in by_video[vid]]
        rng.shuffle(chunk)
        order.extend(chunk)
    return order


class FaceDataset(keras.utils.PyDataset):
    """Batches (x, y[, sample_weight]) of face crops (or, with ``input_kind="frame"``, of whole
    frames letterboxed by deepfake_cli.data.inputs) read lazily from the store.

    Memory holds only the (video_id, row) index and an LRU of a few decoded videos.
    Call :meth:`set_epoch` before an epoch: order and augmentation derive from its key.
    """

    def __init__(self, store: Store, items: list[tuple[str, int]], labels: dict[str, int],
                 batch_size: int, input_size: int, *, augment: bool = False, shuffle: bool = False,
                 weights: dict[int, float] | None = None, video_weights: dict[str, float] | None = None,
                 cache_videos: int = 32, pseudo: PseudoFakes | None = None, input_kind: str = "face",
                 draw: np.ndarray | None = None, shift_augment: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.store, self.items, self.labels = store, list(items), labels
        self.batch_size, self.input_size = batch_size, input_size
        self.augment, self.shuffle, self.weights = augment, shuffle, weights
        self.video_weights = video_weights  # per video; wins over the per-label ``weights``
        self.cache_videos = max(2, cache_videos)
        self.pseudo = pseudo  # turns real faces into labelled pseudo-fakes (needs landmarks68)
        self.input_kind = input_kind
        # balanced sampling: each epoch draws len(items) faces with these probabilities (one per
        # item, summing to 1) instead of weighing the loss; batches then hold every kind alike
        self.draw = None if draw is None else np.asarray(draw, np.float64)
        self.shift_augment = shift_augment
        self._order = list(self.items)
        self._key: tuple[int, ...] = (0,)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray | None, dict[int, int]]] = OrderedDict()
        self._lock = threading.Lock()
        self._mix: dict[int, dict[str, int]] = {}  # batch index -> faces of each kind fed

    def set_epoch(self, key: tuple[int, ...]) -> None:
        """Fix this epoch's order and augmentation from ``key``."""
        self._key = tuple(int(k) for k in key)
        self._mix = {}
        if self.shuffle:
            rng = np.random.default_rng(self._key)
            if self.draw is not None:
                picks = rng.choice(len(self.items), size=len(self.items), replace=True, p=self.draw)
                self._order = [self.items[i] for i in picks]
            else:
                self._order = shuffled_order(self.items, rng, self.cache_videos)

    def __len__(self) -> int:
        return math.ceil(len(self._order) / self.batch_size)

    def ordered_items(self) -> list[tuple[str, int]]:
        """The (video_id, row) of each sample in the current epoch order."""
        return list(self._order)

    def epoch_mix(self) -> dict[str, float]:
        """Shares of real, labelled-fake and pseudo-fake faces fed so far this epoch."""
        with self._lock:
            batches = list(self._mix.values())
        return mix_shares({k: sum(b[k] for b in batches) for k in KINDS})

    def _faces(self, video_id: str) -> tuple[np.ndarray, np.ndarray | None, dict[int, int]]:
        """(images, landmarks68 or None, position of each stored row among them) of a video's
        training images, through the LRU cache. Only the rows train-cnn draws from are read (a
        --spread video's sequence-only faces stay on the disk); ``row`` in the index stays the
        row of the video's whole stored array."""
        with self._lock:
            if video_id in self._cache:
                self._cache.move_to_end(video_id)
                return self._cache[video_id]
        rows = training_rows(self.store, video_id, self.input_kind)  # the rows a ROLE_SPREAD read returns
        if self.input_kind == "face":
            faces = self.store.read_faces(video_id, ROLE_SPREAD)
            images, points = faces.crops, faces.landmarks68
        else:
            images = stored_images(self.store, video_id, self.input_kind, self.input_size, role=ROLE_SPREAD)[1]
            points = None
        cached = (images, points, {int(row): i for i, row in enumerate(rows)})
        with self._lock:
            self._cache[video_id] = cached
            while len(self._cache) > self.cache_videos:
                self._cache.popitem(last=False)
        return cached

    def _sample(self, video_id: str, row: int, rng: np.random.Generator | None) -> tuple[np.ndarray, int, str]:
        """(face crop, label, kind) of one face: kind is real, fake or pseudo_fake."""
        crops, points, position = self._faces(video_id)
        if row not in position:
            raise ValueError(f"row {row} of video {video_id} is not one of its training images (index_faces lists them)")
        at = position[row]
        crop, label = crops[at], self.labels[video_id]
        kind = "fake" if label else "real"
        if self.pseudo is not None and rng is not None and label == 0:
            if points is None:
                raise TrainingDataError(f"video {video_id} has no 68-point landmarks: re-run `dfd crop --force`")
            fake = self.pseudo(crop, points[at], rng)
            if fake is not None:
                crop, label, kind = fake, 1, "pseudo_fake"
        if self.augment and rng is not None:
            crop = augment_face(crop, rng, shift=self.shift_augment)
        return crop, label, kind

    def __getitem__(self, index: int):
        batch = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        rng = np.random.default_rng(self._key + (index,)) if self.augment or self.pseudo else None
        samples = [self._sample(vid, row, rng) for vid, row in batch]
        x = model_input([crop for crop, _, _ in samples], self.input_size)  # as served
        y = np.array([label for _, label, _ in samples], np.float32)
        kinds = [kind for _, _, kind in samples]
        with self._lock:
            self._mix[index] = {k: kinds.count(k) for k in KINDS}
        if self.draw is not None:
            return x, y[:, None]
        if self.video_weights is not None:
            return x, y[:, None], np.array([self.video_weights[vid] for vid, _ in batch], np.float32)
        if self.weights is None:
            return x, y[:, None]
        w = np.array([self.weights[int(v)] for v in y], np.float32)
        return x, y[:, None], w
