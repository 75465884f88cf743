"""MTCNN face detection in numpy + onnxruntime: facenet-pytorch's ``detect_face``, without torch.

A stage-by-stage port of facenet-pytorch 2.5.3 (``models/utils/detect_face.py`` and
``MTCNN.detect``), so that ``dfd predict`` can find faces without paying PyTorch's import.
``OnnxMTCNN(...).detect(images, landmarks=True)`` returns what
``MTCNN(keep_all=True, select_largest=False).detect(images, landmarks=True)`` returns, with
the P/R/O-nets run from the ONNX files in ``mtcnn_nets/`` (exported from facenet's
pretrained weights by ``scripts/export_mtcnn.py``).

Every step keeps torch's float32 arithmetic and semantics: the scale pyramid, ``imresample``
(torch ``interpolate(mode="area")``, i.e. adaptive average pooling, done here from one
integral image per batch, which also serves the R/O-net crops), torchvision ``batched_nms``
(greedy, IoU without +1, suppress IoU > threshold, stable score order, the coordinate-offset
trick for <= 1000 boxes), ``generateBoundingBox``, ``rerec``, ``pad``, ``bbreg``, the
``[y-1:ey, x-1:ex]`` crops and facenet's numpy "Min" NMS. Left: tiny (~1e-6) differences
between onnxruntime's and torch's convolutions, which can only matter for a score or an
overlap sitting exactly on a threshold.

One deliberate deviation: where a crop is empty (a box wholly outside the image), facenet
drops it from the net's batch but not from its box list and then fails on the mismatched
mask; here such a box is simply dropped.

Imports only numpy, OpenCV (``cv2.integral``), onnxruntime and the standard library.

Why this is one long module: it is one algorithm, facenet's ``detect_face``, whose three
stages share the pyramid, crop and NMS helpers; kept side by side with the original it can be
read and checked against it step by step (tests/test_mtcnn_onnx.py holds them equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

NETS_DIR = Path(__file__).parent / "mtcnn_nets"

# file stem -> output names, in facenet's forward order (see mtcnn_export)
NET_OUTPUTS: dict[str, tuple[str, ...]] = {
    "pnet": ("reg", "prob"),
    "rnet": ("reg", "prob"),
    "onet": ("reg", "landmarks", "prob"),
}

_F32 = np.float32
_CHUNK = 512  # facenet's fixed_batch_process batch size for R/O-net
_TV_NMS_VANILLA_ABOVE = 4000  # torchvision batched_nms: per-class loop above this many numbers on CPU


def _load_session(path: Path, threads: int | None):
    import onnxruntime as ort

    if not path.is_file():
        raise FileNotFoundError(f"MTCNN net file not found: {path}")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    # MTCNN makes many short runs with numpy work in between: spinning worker threads
    # would only steal those cores (measured ~2x slower on 2 shared cores with it on)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for damaged files
        raise RuntimeError(f"cannot load MTCNN net {path}: {e}") from e
    expected = NET_OUTPUTS[path.stem]
    got = tuple(o.name for o in sess.get_outputs())
    inputs = [i.name for i in sess.get_inputs()]
    if got != expected or inputs != ["x"]:
        raise RuntimeError(
            f"MTCNN net {path} has inputs {inputs} and outputs {list(got)}; expected ['x'] and "
            f"{list(expected)} (re-export with python scripts/export_mtcnn.py)"
        )
    return sess


# --------------------------------------------------------------------------- resampling


def _integral(imgs: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) images -> (B, 3, H+1, W+1) integral images (cv2.integral per plane);
    exact integers for uint8, so that every window sum below is exact."""
    planes = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))
    b, c, h, w = planes.shape
    if planes.dtype == np.uint8 and 255 * h * w < 2**31:
        depth, acc = cv2.CV_32S, np.int32
    else:
        depth, acc = cv2.CV_64F, np.float64
        if planes.dtype != np.uint8:
            planes = planes.astype(_F32)  # facenet runs on imgs.type(float32)
    out = np.empty((b, c, h + 1, w + 1), dtype=acc)
    for i in range(b):
        for j in range(c):
            out[i, j] = cv2.integral(planes[i, j], sdepth=depth)
    return out


def _bin_edges(start: np.ndarray, size: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-pool bins of ``out`` cells over [start, start+size): (K, out) begin and end
    (torch: start = floor(i * In / Out), end = ceil((i + 1) * In / Out))."""
    i = np.arange(out, dtype=np.int64)
    size = np.asarray(size, dtype=np.int64)[:, None]
    lo = (i * size) // out
    hi = -((-(i + 1) * size) // out)
    start = np.asarray(start, dtype=np.int64)[:, None]
    return start + lo, start + hi


def _average(total: np.ndarray, kh: np.ndarray, kw: np.ndarray) -> np.ndarray:
    """Window sums -> means exactly as torch's adaptive_avg_pool2d: float32 ``sum / kh / kw``."""
    avg = total.astype(_F32)
    avg /= kh.astype(_F32)
    avg /= kw.astype(_F32)
    return avg


def _resize_images(integral: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """torch ``interpolate(imgs, size=out_hw, mode="area")`` of whole images: (B, 3, oh, ow)."""
    h, w = integral.shape[2] - 1, integral.shape[3] - 1
    r0, r1 = (e[0] for e in _bin_edges([0], [h], out_hw[0]))
    c0, c1 = (e[0] for e in _bin_edges([0], [w], out_hw[1]))
    rows = np.take(integral, r1, axis=2)
    rows -= np.take(integral, r0, axis=2)
    total = np.take(rows, c1, axis=3)
    total -= np.take(rows, c0, axis=3)
    return _average(total, (r1 - r0)[:, None], c1 - c0)


def _resize_crops(
    integral: np.ndarray,
    img_idx: np.ndarray,
    y0: np.ndarray,
    x0: np.ndarray,
    hh: np.ndarray,
    ww: np.ndarray,
    size: int,
) -> np.ndarray:
    """torch ``interpolate(img[k, :, y0:y0+hh, x0:x0+ww], size=(size, size), mode="area")``
    for every window k: (K, 3, size, size)."""
    r0, r1 = _bin_edges(y0, hh, size)
    c0, c1 = _bin_edges(x0, ww, size)
    b, c, hp, wp = integral.shape
    # flat indices into the integral image, (K, 3, size, size) for each corner
    base = (np.asarray(img_idx, dtype=np.int64) * c)[:, None] + np.arange(c)
    base = (base * (hp * wp))[:, :, None, None]
    flat = integral.reshape(-1)
    row0, row1 = (r0 * wp)[:, None, :, None], (r1 * wp)[:, None, :, None]
    col0, col1 = c0[:, None, None, :], c1[:, None, None, :]
    total = np.take(flat, base + row1 + col1)
    total -= np.take(flat, base + row0 + col1)
    total -= np.take(flat, base + row1 + col0)
    total += np.take(flat, base + row0 + col0)
    return _average(total, (r1 - r0)[:, None, :, None], (c1 - c0)[:, None, None, :])


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x - _F32(127.5)) * _F32(0.0078125)


# --------------------------------------------------------------------------- NMS


def _nms_torchvision(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision ``nms`` (CPU kernel): greedy by stable descending score, float32 IoU
    without +1, suppress IoU > threshold. Returns kept indices in score order."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    zero = _F32(0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        # the kernel compares the float IoU with the double threshold
        order = rest[~(ovr.astype(np.float64) > threshold)]
    return np.asarray(keep, dtype=np.int64)


def _batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision ``batched_nms`` on CPU, both of its code paths."""
    if boxes.size == 0:
        return np.empty(0, dtype=np.int64)
    if boxes.size > _TV_NMS_VANILLA_ABOVE:
        keep_mask = np.zeros(len(scores), dtype=bool)
        for cls in np.unique(idxs):
            curr = np.nonzero(idxs == cls)[0]
            keep_mask[curr[_nms_torchvision(boxes[curr], scores[curr], threshold)]] = True
        keep = np.nonzero(keep_mask)[0]
        return keep[np.argsort(-scores[keep], kind="stable")]
    max_coordinate = boxes.max()
    offsets = idxs.astype(_F32) * (max_coordinate + _F32(1))
    return _nms_torchvision(boxes + offsets[:, None], scores, threshold)


def _nms_numpy(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """facenet's ``nms_numpy`` (areas with +1; 'Min' divides by the smaller area)."""
    if boxes.size == 0:
        return np.empty((0, 3))
    x1 = boxes[:, 0].copy()
    y1 = boxes[:, 1].copy()
    x2 = boxes[:, 2].copy()
    y2 = boxes[:, 3].copy()
    s = scores
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s)
    pick = np.zeros_like(s, dtype=np.int16)
    counter = 0
    while order.size > 0:
        i = order[-1]
        pick[counter] = i
        counter += 1
        idx = order[0:-1]
        xx1 = np.maximum(x1[i], x1[idx])
        yy1 = np.maximum(y1[i], y1[idx])
        xx2 = np.minimum(x2[i], x2[idx])
        yy2 = np.minimum(y2[i], y2[idx])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        if method == "Min":
            o = inter / np.minimum(area[i], area[idx])
        else:
            o = inter / (area[i] + area[idx] - inter)
        order = order[np.where(o <= threshold)]
    return pick[:counter].copy()


def _batched_nms_numpy(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, threshold: float,
                       method: str) -> np.ndarray:
    if boxes.size == 0:
        return np.empty(0, dtype=np.int64)
    max_coordinate = boxes.max()
    offsets = idxs.astype(_F32) * (max_coordinate + _F32(1))
    keep = _nms_numpy(boxes + offsets[:, None], scores, threshold, method)
    return keep.astype(np.int64)


# --------------------------------------------------------------------------- box helpers


def _generate_bounding_box(reg: np.ndarray, probs: np.ndarray, scale: float, thresh: float):
    """reg (N, 4, h, w), probs (N, h, w) -> (K, 9) [x1 y1 x2 y2 score reg4], image indices."""
    stride, cellsize = 2, 12
    mask = probs >= _F32(thresh)
    n, yy, xx = np.nonzero(mask)
    score = probs[n, yy, xx]
    reg_k = reg[n, :, yy, xx]  # (K, 4)
    bb = np.stack([xx, yy], axis=1).astype(_F32)
    s = _F32(scale)
    q1 = np.floor((_F32(stride) * bb + _F32(1)) / s)
    q2 = np.floor((_F32(stride) * bb + _F32(cellsize - 1) + _F32(1)) / s)
    boxes = np.concatenate([q1, q2, score[:, None], reg_k], axis=1).astype(_F32, copy=False)
    return boxes, n.astype(np.int64)


def _rerec(b: np.ndarray) -> np.ndarray:
    h = b[:, 3] - b[:, 1]
    w = b[:, 2] - b[:, 0]
    side = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * _F32(0.5) - side * _F32(0.5)
    b[:, 1] = b[:, 1] + h * _F32(0.5) - side * _F32(0.5)
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def _pad(boxes: np.ndarray, w: int, h: int):
    t = np.trunc(boxes[:, :4]).astype(np.int32)
    x, y, ex, ey = (t[:, i].copy() for i in range(4))
    x[x < 1] = 1
    y[y < 1] = 1
    ex[ex > w] = w
    ey[ey > h] = h
    return y, ey, x, ex


def _bbreg(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = b[:, 2] - b[:, 0] + _F32(1)
    h = b[:, 3] - b[:, 1] + _F32(1)
    b1 = b[:, 0] + reg[:, 0] * w
    b2 = b[:, 1] + reg[:, 1] * h
    b3 = b[:, 2] + reg[:, 2] * w
    b4 = b[:, 3] + reg[:, 3] * h
    b[:, 0], b[:, 1], b[:, 2], b[:, 3] = b1, b2, b3, b4
    return b


# --------------------------------------------------------------------------- detector


class OnnxMTCNN:
    """facenet-pytorch's MTCNN detector (``keep_all=True, select_largest=False``) on onnxruntime.

    ``min_face_size`` may be changed between calls, as on facenet's MTCNN. ``threads`` sets
    the sessions' intra-op threads (None: onnxruntime's default, one per core).
    """

    def __init__(
        self,
        nets_dir: Path | str = NETS_DIR,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        min_face_size: int = 20,
        threads: int | None = None,
    ):
        self.nets_dir = Path(nets_dir)
        self.thresholds = tuple(float(t) for t in thresholds)
        if len(self.thresholds) != 3:
            raise ValueError(f"thresholds must have 3 values, got {thresholds!r}")
        self.factor = float(factor)
        self.min_face_size = min_face_size
        self.threads = threads
        self._pnet = _load_session(self.nets_dir / "pnet.onnx", threads)
        self._rnet = _load_session(self.nets_dir / "rnet.onnx", threads)
        self._onet = _load_session(self.nets_dir / "onet.onnx", threads)

    # ------------------------------------------------------------------ nets

    @staticmethod
    def _run_chunked(sess, x: np.ndarray) -> list[np.ndarray]:
        outs = [sess.run(None, {"x": x[i : i + _CHUNK]}) for i in range(0, len(x), _CHUNK)]
        return [np.concatenate(parts, axis=0) for parts in zip(*outs)]

    def _crops(self, integral, image_inds, boxes, w, h, size):
        """The R/O-net inputs for ``boxes``: normalised (K', 3, size, size) and the mask of
        boxes whose crop is non-empty (facenet's skip condition)."""
        y, ey, x, ex = _pad(boxes, w, h)
        ok = (ey > y - 1) & (ex > x - 1)
        data = _resize_crops(
            integral, image_inds[ok], y[ok] - 1, x[ok] - 1, ey[ok] - y[ok] + 1, ex[ok] - x[ok] + 1, size
        )
        return _normalise(data), ok

    # ------------------------------------------------------------------ pipeline

    def _detect_face(self, imgs: np.ndarray):
        """facenet's ``detect_face`` on (B, H, W, 3): per-image (N, 5) boxes+score, (N, 5, 2)."""
        threshold = self.thresholds
        batch_size, h, w = imgs.shape[:3]
        integral = _integral(imgs)

        m = 12.0 / self.min_face_size
        minl = min(h, w) * m
        scale_i = m
        scales = []
        while minl >= 12:
            scales.append(scale_i)
            scale_i = scale_i * self.factor
            minl = minl * self.factor

        # First stage
        boxes_l, inds_l = [], []
        for scale in scales:
            size = (int(h * scale + 1), int(w * scale + 1))
            im_data = _normalise(_resize_images(integral, size))
            reg, probs = self._pnet.run(None, {"x": im_data})
            boxes_s, inds_s = _generate_bounding_box(reg, probs[:, 1], scale, threshold[0])
            pick = _batched_nms(boxes_s[:, :4], boxes_s[:, 4], inds_s, 0.5)
            boxes_l.append(boxes_s[pick])
            inds_l.append(inds_s[pick])
        boxes = np.concatenate(boxes_l, axis=0) if boxes_l else np.zeros((0, 9), _F32)
        image_inds = np.concatenate(inds_l, axis=0) if inds_l else np.zeros(0, np.int64)

        pick = _batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]

        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        qq1 = boxes[:, 0] + boxes[:, 5] * regw
        qq2 = boxes[:, 1] + boxes[:, 6] * regh
        qq3 = boxes[:, 2] + boxes[:, 7] * regw
        qq4 = boxes[:, 3] + boxes[:, 8] * regh
        boxes = _rerec(np.stack([qq1, qq2, qq3, qq4, boxes[:, 4]], axis=1))

        # Second stage
        if len(boxes) > 0:
            im_data, ok = self._crops(integral, image_inds, boxes, w, h, 24)
            boxes, image_inds = boxes[ok], image_inds[ok]
            if len(im_data):
                reg, prob = self._run_chunked(self._rnet, im_data)
            else:
                reg, prob = np.zeros((0, 4), _F32), np.zeros((0, 2), _F32)
            score = prob[:, 1]
            ipass = score > _F32(threshold[1])
            boxes = np.concatenate([boxes[ipass, :4], score[ipass, None]], axis=1)
            image_inds = image_inds[ipass]
            mv = reg[ipass]
            pick = _batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
            boxes = _rerec(_bbreg(boxes, mv))

        # Third stage
        points = np.zeros((0, 5, 2), _F32)
        if len(boxes) > 0:
            im_data, ok = self._crops(integral, image_inds, boxes, w, h, 48)
            boxes, image_inds = boxes[ok], image_inds[ok]
            if len(im_data):
                reg, lms, prob = self._run_chunked(self._onet, im_data)
            else:
                reg, lms, prob = np.zeros((0, 4), _F32), np.zeros((0, 10), _F32), np.zeros((0, 2), _F32)
            score = prob[:, 1]
            ipass = score > _F32(threshold[2])
            pts = lms[ipass]
            boxes = np.concatenate([boxes[ipass, :4], score[ipass, None]], axis=1)
            image_inds = image_inds[ipass]
            mv = reg[ipass]

            w_i = (boxes[:, 2] - boxes[:, 0] + _F32(1))[:, None]
            h_i = (boxes[:, 3] - boxes[:, 1] + _F32(1))[:, None]
            points_x = w_i * pts[:, :5] + boxes[:, 0:1] - _F32(1)
            points_y = h_i * pts[:, 5:10] + boxes[:, 1:2] - _F32(1)
            points = np.stack([points_x, points_y], axis=2)
            boxes = _bbreg(boxes, mv)

            pick = _batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
            boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

        batch_boxes = []
        batch_points = []
        for b_i in range(batch_size):
            sel = np.where(image_inds == b_i)
            batch_boxes.append(boxes[sel].copy())
            batch_points.append(points[sel].copy())
        return np.array(batch_boxes, dtype=object), np.array(batch_points, dtype=object)

    def detect(self, images, landmarks: bool = True):
        """Boxes (N, 4), probabilities (N,) and landmarks (N, 5, 2) per image (only the first
        two with ``landmarks=False``; note facenet's own default is False), exactly in
        facenet's ``MTCNN.detect`` format: object arrays, faces by descending probability,
        ``None``/``[None]``/``None`` for an image without faces; a single (H, W, 3) image gives
        unbatched results. ``images``: uint8 RGB, (B, H, W, 3) or a list of equal-size
        (H, W, 3) arrays."""
        batched = isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.ndim == 4)
        if isinstance(images, (list, tuple)):
            if any(np.shape(im) != np.shape(images[0]) for im in images):
                raise ValueError("MTCNN batch processing only compatible with equal-dimension images.")
            imgs = np.stack([np.uint8(im) for im in images])
        else:
            imgs = np.asarray(images)
            if imgs.ndim == 3:
                imgs = imgs[None]
        if imgs.ndim != 4 or imgs.shape[3] != 3:
            raise ValueError(f"expected (B, H, W, 3) RGB images, got shape {imgs.shape}")
        if imgs.dtype != np.uint8:
            imgs = imgs.astype(_F32)

        batch_boxes, batch_points = self._detect_face(imgs)

        boxes, probs, points = [], [], []
        for box, point in zip(batch_boxes, batch_points):
            box = np.array(box)
            point = np.array(point)
            if len(box) == 0:
                boxes.append(None)
                probs.append([None])
                points.append(None)
            else:
                boxes.append(box[:, :4])
                probs.append(box[:, 4])
                points.append(point)
        boxes = np.array(boxes, dtype=object)
        probs = np.array(probs, dtype=object)
        points = np.array(points, dtype=object)

        if not batched:
            boxes, probs, points = boxes[0], probs[0], points[0]
        if landmarks:
            return boxes, probs, points
        return boxes, probs
