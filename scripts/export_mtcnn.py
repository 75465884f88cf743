"""Export facenet-pytorch's MTCNN P/R/O-nets to ONNX for :mod:`deepfake_cli.faces.mtcnn_onnx`.

``python scripts/export_mtcnn.py [OUT_DIR]`` (default: the shipped
``deepfake_cli/faces/mtcnn_nets``) writes ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx`` from the
pretrained weights of the installed facenet-pytorch. This module needs torch and
facenet-pytorch; the runtime side (``mtcnn_onnx``) needs neither.

Graphs (all float32, NCHW input named ``x``, already normalised as ``(px - 127.5) / 128``;
outputs in the order of facenet's ``forward``):

* ``pnet.onnx``: ``x`` (N, 3, H, W), N/H/W dynamic (H, W >= 12) ->
  ``reg`` (N, 4, H', W') box offsets, ``prob`` (N, 2, H', W') softmax (channel 1 = face),
  with H' = ceil((H - 2) / 2) - 4.
* ``rnet.onnx``: ``x`` (N, 3, 24, 24), N dynamic -> ``reg`` (N, 4), ``prob`` (N, 2).
* ``onet.onnx``: ``x`` (N, 3, 48, 48), N dynamic -> ``reg`` (N, 4),
  ``landmarks`` (N, 10) (5 x then 5 y, relative to the box), ``prob`` (N, 2).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

OPSET = 17

# name -> (input H, W for the trace, output names in facenet's forward order)
NET_SPECS: dict[str, tuple[tuple[int, int], list[str]]] = {
    "pnet": ((64, 64), ["reg", "prob"]),
    "rnet": ((24, 24), ["reg", "prob"]),
    "onet": ((48, 48), ["reg", "landmarks", "prob"]),
}


def export_mtcnn_nets(out_dir: Path) -> list[Path]:
    """Write pnet/rnet/onet ``.onnx`` files to ``out_dir``; return their paths."""
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = {"pnet": PNet, "rnet": RNet, "onet": ONet}
    written: list[Path] = []
    for name, ((h, w), outputs) in NET_SPECS.items():
        net = classes[name]().eval()
        x = torch.zeros(1, 3, h, w, dtype=torch.float32)
        if name == "pnet":
            dynamic = {"x": {0: "n", 2: "h", 3: "w"}}
            dynamic.update({o: {0: "n", 2: "oh", 3: "ow"} for o in outputs})
        else:
            dynamic = {"x": {0: "n"}}
            dynamic.update({o: {0: "n"} for o in outputs})
        path = out_dir / f"{name}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # dynamo=False is the (deprecated) TorchScript exporter, chosen on purpose: it
            # gives plain static graphs with the dynamic axes asked for
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                net,
                (x,),
                str(path),
                input_names=["x"],
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1:
        print("usage: python scripts/export_mtcnn.py [OUT_DIR]", file=sys.stderr)
        return 2
    if argv:
        out_dir = Path(argv[0])
    else:
        from deepfake_cli.faces.mtcnn_onnx import NETS_DIR

        out_dir = NETS_DIR
    for path in export_mtcnn_nets(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
