"""Make examples/astronaut.mp4: a 2-second clip of a real face that dfd may ship.

The face is NASA's public-domain portrait of astronaut Eileen Collins, as shipped by
scikit-image (skimage.data.astronaut). The clip slowly pans and zooms over it so that
every frame differs, as in a real video. Run: python examples/make_astronaut_clip.py
"""

from pathlib import Path

import cv2
import numpy as np


def make_clip(out: Path, frames: int = 50, fps: float = 25.0, size: int = 360) -> Path:
    from skimage.data import astronaut

    image = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {out}")
    for t in range(frames):
        zoom = 1.0 + 0.15 * t / frames
        angle = 3.0 * np.sin(t / 8.0)
        matrix = cv2.getRotationMatrix2D((220.0, 200.0), angle, zoom)
        matrix[:, 2] += (size / 2 - 220.0, size / 2 - 200.0)
        writer.write(cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REFLECT))
    writer.release()
    return out


if __name__ == "__main__":
    print(make_clip(Path(__file__).with_name("astronaut.mp4")))
