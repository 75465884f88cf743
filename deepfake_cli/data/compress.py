"""`dfd compress`: H.264 re-encodes at the FaceForensics++ compression levels (c23, c40).

FaceForensics++ made its c23 and c40 versions with libx264 at constant rate factor 23 and 40
(`ffmpeg -i in -c:v libx264 -crf N out`). This does the same with the ffmpeg binary that the
``imageio-ffmpeg`` wheel ships (libx264 included), so nothing has to be installed by hand.
Every output is written to a temporary name and renamed when complete, so a killed run leaves
whole files only and a rerun skips what is done. Sound is dropped: detection does not use it.

Output paths keep the input's folder layout under ``--out``; in a FaceForensics++ tree a
``<quality>/videos/`` folder (raw, c0, c23, c40) becomes ``c<crf>/videos/``, so that
`dfd extract` reads the result as that compression level.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deepfake_cli.errors import DfdError, OptionsError
from deepfake_cli.files import TMP_MARK, atomic_write
from deepfake_cli.progress import Reporter
from deepfake_cli.data.video import VIDEO_SUFFIXES

FFPP_QUALITY = re.compile(r"^(raw|c0|c23|c40)$")


class CompressError(DfdError):
    """ffmpeg cannot be found or fails on a file."""


@dataclass
class CompressSummary:
    crf: int
    written: list[str] = field(default_factory=list)
    already_done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, ffmpeg's reason)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def ffmpeg_exe() -> str:
    """The ffmpeg binary of the imageio-ffmpeg wheel."""
    try:
        import imageio_ffmpeg
    except ModuleNotFoundError:
        raise CompressError("dfd compress needs the imageio-ffmpeg package: pip install imageio-ffmpeg") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def videos_under(path: Path) -> list[tuple[Path, Path]]:
    """(video, its path relative to the root the output mirrors) for a file or a folder."""
    if path.is_file():
        return [(path, Path(path.name))]
    return [(p, p.relative_to(path)) for p in sorted(path.rglob("*"))
            if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")]


def output_path(relative: Path, crf: int, out_dir: Path) -> Path:
    """Where the re-encode of ``relative`` goes: FF++ ``<quality>/videos/`` becomes ``c<crf>/videos/``."""
    parts = list(relative.parts)
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "videos" and FFPP_QUALITY.match(parts[i - 1]):
            parts[i - 1] = f"c{crf}"
            break
    return out_dir.joinpath(*parts).with_suffix(".mp4")


def encode(source: Path, target: Path, crf: int) -> None:
    """One H.264 re-encode at ``crf`` (libx264, yuv420p, no sound), written atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, suffix=".mp4") as tmp:
        run = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
                              "-map", "0:v:0", "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", "-an",
                              str(tmp)], capture_output=True, text=True)
        if run.returncode != 0:
            reason = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]
            raise CompressError(f"{source}: ffmpeg could not re-encode it ({reason})")


def compress(paths: list[Path], crf: int, out_dir: Path, reporter: Reporter | None = None) -> CompressSummary:
    """Re-encode every video under ``paths`` at ``crf`` into ``out_dir`` (resumable)."""
    if not 0 <= crf <= 51:
        raise OptionsError(f"--crf must be between 0 and 51 (FaceForensics++ uses 23 and 40), not {crf}")
    reporter = reporter or Reporter()
    jobs = []
    for path in paths:
        if not path.exists():
            raise OptionsError(f"{path}: no such file or folder")
        jobs.extend(videos_under(path))
    if not jobs:
        raise OptionsError(f"no video files in {', '.join(str(p) for p in paths)}")
    summary = CompressSummary(crf=crf)
    if out_dir.is_dir():
        for stale in out_dir.rglob(f"*{TMP_MARK}*"):
            stale.unlink(missing_ok=True)  # half-written output of a killed run
    reporter.start(len(jobs), f"compress c{crf}")
    for source, relative in jobs:
        target = output_path(relative, crf, out_dir)
        if target.exists():
            summary.already_done += 1
        else:
            try:
                encode(source, target, crf)
                summary.written.append(str(target))
            except CompressError as exc:
                summary.failed.append((str(source), str(exc)))
                reporter.warn(str(exc))
        reporter.advance(source.name)
    reporter.finish()
    return summary
