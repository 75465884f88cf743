"""deepfake_cli.faces.mtcnn_onnx: facenet-pytorch's MTCNN on onnxruntime, checked against facenet itself.

The shipped nets must compute what facenet's installed PNet/RNet/ONet compute, and
``OnnxMTCNN.detect`` must return what ``MTCNN(keep_all=True, select_largest=False).detect``
returns (same faces, same order, same container types) on real faces: skimage's astronaut,
camera man and LFW faces, and the project's clip.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from deepfake_cli.faces.mtcnn_onnx import NETS_DIR, OnnxMTCNN, _resize_crops, _resize_images, _integral

CLIP = Path(__file__).resolve().parent.parent / "examples" / "astronaut.mp4"

BOX_ATOL = 2e-3  # px; measured max difference ~1.2e-4
PROB_ATOL = 1e-5  # measured max ~2.4e-7


@pytest.fixture(scope="module")
def facenet():
    torch = pytest.importorskip("torch")
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, select_largest=False, thresholds=[0.6, 0.7, 0.7], device=torch.device("cpu"))
    # torch's multi-threaded kernels crawl on a busy machine (10x+ on 2 shared cores): the
    # reference is computed single-threaded, the setting restored afterwards
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield mtcnn.eval()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def onnx_mtcnn():
    return OnnxMTCNN(threads=2)


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _lfw_grid(n: int, cell: int) -> np.ndarray:
    """n x n LFW faces (skimage's bundled subset; the first 100 are faces), cell px each."""
    faces = data.lfw_subset()[: n * n]
    tiles = [cv2.resize((f * 255).astype(np.uint8), (cell, cell), interpolation=cv2.INTER_LINEAR) for f in faces]
    rows = [np.concatenate(tiles[r * n : (r + 1) * n], axis=1) for r in range(n)]
    return _rgb(np.concatenate(rows, axis=0))


def _clip_frames(count: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    assert frames, f"cannot read {CLIP}"
    step = max(1, len(frames) // count)
    return np.stack(frames[::step][:count])


def _cases() -> dict[str, np.ndarray]:
    astronaut = data.astronaut()
    return {
        "astronaut": astronaut[None],
        "astronaut-301px": cv2.resize(astronaut, (301, 301), interpolation=cv2.INTER_AREA)[None],
        "pair": np.stack([astronaut, np.ascontiguousarray(astronaut[:, ::-1])]),
        "face-and-black": np.stack([astronaut[:300, 100:400], np.zeros((300, 300, 3), np.uint8)]),
        "camera": cv2.resize(_rgb(data.camera()), (256, 256), interpolation=cv2.INTER_AREA)[None],
        "coins": _rgb(data.coins())[None],
        "black": np.zeros((1, 120, 160, 3), np.uint8),
        "lfw-36-faces": _lfw_grid(6, 50)[None],
        "clip-7": _clip_frames(7),
    }


def _assert_same(ref, got, where: str) -> int:
    """Same container types/shapes and per-image results; returns the number of faces."""
    faces = 0
    for name, r, g in zip(("boxes", "probs", "points"), ref, got):
        assert (type(g), g.dtype, g.shape) == (type(r), r.dtype, r.shape), f"{where}: {name} container"
    for i, (rb, rp, rl, gb, gp, gl) in enumerate(zip(*ref, *got)):
        at = f"{where}, image {i}"
        if rb is None:
            assert gb is None and gl is None and list(gp) == [None], f"{at}: facenet found no face"
            continue
        assert gb is not None, f"{at}: no face found, facenet found {len(rb)}"
        for r, g in ((rb, gb), (rp, gp), (rl, gl)):
            assert (type(g), g.dtype) == (type(r), r.dtype), at
        assert np.shape(gb) == np.shape(rb), f"{at}: {len(gb)} faces, facenet {len(rb)}"
        np.testing.assert_allclose(np.asarray(gb, float), np.asarray(rb, float), rtol=0, atol=BOX_ATOL, err_msg=at)
        np.testing.assert_allclose(np.asarray(gp, float), np.asarray(rp, float), rtol=0, atol=PROB_ATOL, err_msg=at)
        np.testing.assert_allclose(np.asarray(gl, float), np.asarray(rl, float), rtol=0, atol=BOX_ATOL, err_msg=at)
        assert np.all(np.diff(np.asarray(gp, float)) <= 0), f"{at}: not by probability"
        faces += len(rb)
    return faces


# ------------------------------------------------------------------ the shipped nets


def test_shipped_nets_match_facenet_weights():
    torch = pytest.importorskip("torch")
    import onnxruntime as ort
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    rng = np.random.default_rng(0)
    inputs = {
        "pnet": [(2, 3, 97, 131), (1, 3, 64, 64), (3, 3, 12, 12)],
        "rnet": [(3, 3, 24, 24)],
        "onet": [(3, 3, 48, 48)],
    }
    for name, net_cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = net_cls().eval()
        sess = ort.InferenceSession(str(NETS_DIR / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for shape in inputs[name]:
            x = rng.uniform(-1, 1, shape).astype(np.float32)
            with torch.no_grad():
                want = [t.numpy() for t in net(torch.from_numpy(x))]
            got = sess.run(None, {"x": x})
            assert len(got) == len(want), name
            for w, g in zip(want, got):
                assert g.shape == w.shape, (name, shape)
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-5, err_msg=f"{name} {shape}")


# ------------------------------------------------------------------ resampling is torch's, exactly


def test_area_resample_is_bit_exact_torch_interpolate_area():
    torch = pytest.importorskip("torch")
    from torch.nn.functional import interpolate

    imgs = np.stack([data.astronaut()[:360, :500], np.ascontiguousarray(data.astronaut()[::-1, :500][:360])])
    t = torch.as_tensor(imgs.copy()).permute(0, 3, 1, 2).type(torch.float32)
    integral = _integral(imgs)
    for size in [(217, 301), (100, 37), (13, 19), (400, 700)]:  # down, odd ratios, up
        np.testing.assert_array_equal(_resize_images(integral, size), interpolate(t, size=size, mode="area").numpy())
    windows = np.array([[10, 80, 20, 95], [0, 5, 3, 9], [100, 300, 50, 260], [0, 360, 0, 500]])  # y0 ey x0 ex
    for size in (24, 48):
        want = np.concatenate([
            interpolate(t[k % 2, :, y0:ey, x0:ex].unsqueeze(0), size=(size, size), mode="area").numpy()
            for k, (y0, ey, x0, ex) in enumerate(windows)
        ])
        got = _resize_crops(integral, np.arange(4) % 2, windows[:, 0], windows[:, 2],
                            windows[:, 1] - windows[:, 0], windows[:, 3] - windows[:, 2], size)
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ detect == facenet's detect


@pytest.mark.parametrize("min_face_size", [20, 40])
def test_detect_matches_facenet(facenet, onnx_mtcnn, min_face_size):
    facenet.min_face_size = min_face_size
    onnx_mtcnn.min_face_size = min_face_size
    faces = {}
    for name, imgs in _cases().items():
        ref = facenet.detect(imgs, landmarks=True)
        got = onnx_mtcnn.detect(imgs, landmarks=True)
        faces[name] = _assert_same(ref, got, f"{name} @ min_face_size {min_face_size}")
    # the cases do what they are there for
    assert faces["coins"] == faces["black"] == 0
    assert faces["astronaut"] >= 1 and faces["pair"] >= 2 and faces["face-and-black"] >= 1
    assert faces["lfw-36-faces"] >= 30
    assert faces["clip-7"] >= 7


def test_single_image_and_landmarks_false_match_facenet(facenet, onnx_mtcnn):
    facenet.min_face_size = onnx_mtcnn.min_face_size = 20
    img = data.astronaut()
    ref_b, ref_p, ref_l = facenet.detect(img, landmarks=True)
    got_b, got_p, got_l = onnx_mtcnn.detect(img, landmarks=True)
    for r, g in ((ref_b, got_b), (ref_p, got_p), (ref_l, got_l)):
        assert (type(g), g.dtype, g.shape) == (type(r), r.dtype, r.shape)
    np.testing.assert_allclose(np.asarray(got_b, float), np.asarray(ref_b, float), rtol=0, atol=BOX_ATOL)
    np.testing.assert_allclose(np.asarray(got_l, float), np.asarray(ref_l, float), rtol=0, atol=BOX_ATOL)
    boxes, probs = onnx_mtcnn.detect(img[None], landmarks=False)
    np.testing.assert_array_equal(np.asarray(boxes[0], float), np.asarray(got_b, float))
    np.testing.assert_array_equal(np.asarray(probs[0], float), np.asarray(got_p, float))


# ------------------------------------------------------------------ no torch, clear errors


def test_import_and_detect_do_not_load_torch_or_tensorflow():
    code = (
        "import sys, numpy as np; import deepfake_cli.faces.mtcnn_onnx as m; "
        "print(m.OnnxMTCNN(threads=1).detect(np.zeros((1, 64, 64, 3), np.uint8), landmarks=True)[0]); "
        "print(sorted(k for k in ('torch', 'tensorflow', 'keras', 'facenet_pytorch') if k in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == "[]", proc.stdout


def test_missing_net_file_is_named(tmp_path):
    for name in ("pnet.onnx", "rnet.onnx"):
        shutil.copy(NETS_DIR / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match=r"onet\.onnx"):
        OnnxMTCNN(nets_dir=tmp_path)


def test_damaged_net_file_is_named(tmp_path):
    for name in ("pnet.onnx", "rnet.onnx", "onet.onnx"):
        shutil.copy(NETS_DIR / name, tmp_path / name)
    blob = (tmp_path / "rnet.onnx").read_bytes()
    (tmp_path / "rnet.onnx").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(RuntimeError, match=r"rnet\.onnx"):
        OnnxMTCNN(nets_dir=tmp_path)
    # a valid ONNX file that is the wrong net
    shutil.copy(NETS_DIR / "onet.onnx", tmp_path / "rnet.onnx")
    with pytest.raises(RuntimeError, match=r"rnet\.onnx.*outputs"):
        OnnxMTCNN(nets_dir=tmp_path)
