"""What `predict` returns for one input (PredictResult), and a clip between its preparation and
its scoring (Prepared); deepfake_cli.serve.predict makes both."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from deepfake_cli.files import to_jsonable


@dataclass
class PredictResult:
    path: str
    verdict: str = ""  # real | fake | uncertain | "" on error
    probability: float = float("nan")  # calibrated P(fake)
    threshold: float = float("nan")
    uncertain_band: list[float] = field(default_factory=list)  # [lo, hi): the model's band, where the verdict is "uncertain"
    cnn_probability: float = float("nan")  # mean CNN frame score of the reported (most suspicious) track
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    track_probabilities: list[float] = field(default_factory=list)
    track_reports: list[dict] = field(default_factory=list)  # every track seen (TrackReport), scored or not
    frame_scores: list[float] = field(default_factory=list)  # CNN P(fake) per face of the reported track
    frame_indices: list[int] = field(default_factory=list)  # the clip's frame number of each of those faces
    clip_frames: int = 0  # frames in the whole clip (decoded count)
    duration_s: float | None = None  # the clip's length (None for an image)
    windows: list[dict] = field(default_factory=list)  # judged.judged_windows: what was judged, and how it scored
    most_suspicious_window: int | None = None  # index into windows: the one that drove (or would drive) a fake call
    warnings: list[str] = field(default_factory=list)  # what weakens or qualifies the verdict
    heatmaps: list[str] = field(default_factory=list)  # --heatmap: the images written
    report: str = ""  # --report: the HTML page written
    members: list[dict] = field(default_factory=list)  # an ensemble's members: name, probability, verdict
    error: str = ""
    exit_code: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return to_jsonable(asdict(self))

    def tracks_summary(self) -> str:
        """'2 faces seen, 1 scored (the other: ...)' when more than one face track was seen, else ''."""
        if len(self.track_reports) < 2:
            return ""
        skipped = [r for r in self.track_reports if not r["scored"]]
        text = f"{len(self.track_reports)} faces seen, {len(self.track_reports) - len(skipped)} scored"
        if skipped:
            text += " (not scored: " + "; ".join(r["reason"] for r in skipped) + ")"
        return text



@dataclass
class Prepared:
    """A clip between :meth:`Predictor.prepare` and :meth:`Predictor.finish`: its frames, face
    tracks and the model inputs made from them (or the error that stopped it)."""

    result: PredictResult
    single_image: bool = False
    info: object = None  # video.VideoInfo
    kept: np.ndarray | None = None  # indices of the sampled frames
    frame_list: list = field(default_factory=list)
    reports: list = field(default_factory=list)  # evidence.TrackReport of every track seen
    crops: list = field(default_factory=list)  # faces.FaceTrackResult of each scored track (of every window)
    track_window: list = field(default_factory=list)  # the window of each scored track
    report_window: list = field(default_factory=list)  # the window of each of reports
    window_frames: list = field(default_factory=list)  # frames sampled in each window
    inputs: np.ndarray | None = None  # what the CNN scores: the crops of every scored track, or the frames
