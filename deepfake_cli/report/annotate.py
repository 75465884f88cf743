"""What `predict --annotate` draws: the sampled frames with the scored face, its score and the verdict."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deepfake_cli.errors import DfdError


VERDICT_COLOURS = {"fake": (0, 0, 255), "real": (0, 200, 0), "uncertain": (0, 165, 255)}  # BGR


class AnnotateError(DfdError):
    """The annotated video cannot be written."""


def write_annotated(out: Path, frames: list[np.ndarray], faces, scores: np.ndarray, result,
                    fps: float, cams: np.ndarray | None = None) -> None:
    """The frames dfd looked at, with the scored face boxed in the colour of the clip's verdict,
    the CNN's score of each face (label and a grey bar along the bottom edge: not on the
    threshold's scale, so no threshold is drawn there) and the verdict; every label is kept
    inside the frame.
    With ``cams`` (the faces' class activation maps, crop pixels) each map is warped back onto
    its face in the frame."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), max(1.0, fps), (width, height))
    if not writer.isOpened():
        raise AnnotateError(f"cannot write {out}: no video writer for it (use a .mp4 name in a writable folder)")
    by_position = {int(p): i for i, p in enumerate(faces.frame_positions)}
    unit = max(1, min(width, height) // 360)  # line width and font scale grow with the frame
    scale, thickness = 0.5 * unit, unit
    bar = max(6, height // 60)
    colour = VERDICT_COLOURS.get(result.verdict, (255, 255, 255))  # the box says the clip's verdict, as printed
    for position, frame in enumerate(frames):
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if position in by_position and cams is not None:
            image = heatmap_on_frame(image, cams[by_position[position]], faces.matrices[by_position[position]])
        if position in by_position:
            i = by_position[position]
            x1, y1, x2, y2 = (int(v) for v in faces.boxes[i])
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2 * thickness)
            put_label(image, f"face score {scores[i]:.2f}", x1, y1, colour, scale, thickness)
            filled = int(round(float(scores[i]) * width))  # the CNN's score of this face: not the clip's scale
            cv2.rectangle(image, (0, height - bar), (filled, height - 1), (200, 200, 200), -1)
        put_label(image, f"video: {result.verdict} P(fake)={result.probability:.2f}", 0, 0, (255, 255, 255),
                  scale, thickness, above=False)
        writer.write(image)
    writer.release()


def put_label(image: np.ndarray, text: str, x: int, y: int, colour, scale: float, thickness: int,
              above: bool = True) -> tuple[int, int, int, int]:
    """Text on a dark box at (x, y) (above that point, or below it when there is no room),
    moved as needed to lie wholly inside the image; returns the box (left, top, right, bottom)."""
    height, width = image.shape[:2]
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, thickness * 2)
    box_h = h + base + 2 * pad
    top = y - box_h if above and y - box_h >= 0 else y
    top = int(min(max(0, top), max(0, height - box_h)))
    left = int(min(max(0, x), max(0, width - w - 2 * pad)))
    cv2.rectangle(image, (left, top), (left + w + 2 * pad, top + box_h), (0, 0, 0), -1)
    cv2.putText(image, text, (left + pad, top + pad + h), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness,
                cv2.LINE_AA)
    return left, top, left + w + 2 * pad, top + box_h


def heatmap_on_frame(image_bgr: np.ndarray, cam: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The frame with a face's CAM (crop pixels; ``matrix``: frame -> crop) blended onto the face."""
    from deepfake_cli.report.heatmaps import CAM_RANGE, diverging_colours

    height, width = image_bgr.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float32))
    signed = np.clip(cam / CAM_RANGE, -1, 1).astype(np.float32)
    coloured = diverging_colours((signed + 1) / 2)[:, :, ::-1]  # BGR
    warped = cv2.warpAffine(np.ascontiguousarray(coloured), inverse, (width, height))
    # tinted in proportion to the push, as in the report: the background and neutral pixels stay as they are
    mask = cv2.warpAffine(0.6 * np.abs(signed), inverse, (width, height))[..., None]
    return (image_bgr * (1 - mask) + warped * mask).astype(np.uint8)
