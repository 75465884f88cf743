"""The face rule: how a clip's frames become the face sequence a model scores, one rule for
`crop` and `predict`.

Three parts, recorded with the faces `crop` writes (their settings: ``detect_every`` and
``track_rule``), copied from those settings into a bundle's ``face`` section by `train-cnn`,
and read back from there by `predict`:

- ``detect_every``: the detector runs on every N-th frame of consecutively sampled frames (and
  the last), the tracks interpolated between (tracking.detect_sparse); 1: every frame;
- ``identity``: across a hard cut a track goes on only with a face of the same person
  (identity.IdentityCheck); within a shot, position decides (tracking.build_tracks);
- ``choose``: whose probability is the clip's. "main": the main track's (the most important,
  tracking.build_tracks' first), the one face sequence `crop` stores, so the one
  `export-features` and `evaluate` measure; `predict` scores the other faces worth scoring
  too, and reports them beside the verdict. "max": the most suspicious of the scored tracks
  (evidence.judge_tracks), what `predict` served before bundles recorded a rule; a store
  holds one track a video, so no stored figure measures it.

:func:`face_tracks` is the one function both call. A bundle whose faces recorded no rule (made
before it was recorded, like the shipped default model) is served by :data:`LEGACY_RULE`,
`predict`'s behaviour then, so its verdicts do not move.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepfake_cli.errors import DfdError
from deepfake_cli.faces.detectors import Detection, FaceDetector
from deepfake_cli.faces.identity import FaceDescriber, IdentityCheck
from deepfake_cli.faces.tracking import detect_sparse

RULE_KEY = "track_rule"  # in the faces' settings and a bundle's face section: {"identity": ..., "choose": ...}
CHOICES = ("main", "max")


class TrackRuleError(DfdError):
    """A recorded face rule dfd cannot follow."""


@dataclass(frozen=True)
class TrackRule:
    """Detection stride, identity linking and the choice among tracks (see the module doc)."""

    detect_every: int = 1
    identity: bool = True
    choose: str = "main"

    def __post_init__(self):
        every = self.detect_every
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise TrackRuleError(f"detect_every must be a whole number of at least 1, not {every!r}")
        if self.choose not in CHOICES:
            raise TrackRuleError(f"track_rule choose must be one of {', '.join(CHOICES)}, not {self.choose!r}")

    def stride(self, consecutive: bool) -> int:
        """The stride for frames sampled consecutively (neighbours: a face moves little between
        them) or not (far apart: every frame is detected)."""
        return int(self.detect_every) if consecutive else 1

    def settings(self, every: int | None = None) -> dict:
        """The rule as faces' settings record it; ``every``: the stride detection ran at."""
        return {"detect_every": int(self.detect_every if every is None else every),
                RULE_KEY: {"identity": bool(self.identity), "choose": self.choose}}


# `predict` before bundles recorded a rule: every 4th frame (its --detect-every default), the
# identity check, and the most suspicious scored track.
LEGACY_RULE = TrackRule(detect_every=4, identity=True, choose="max")


def recorded_rule(face: dict) -> TrackRule | None:
    """The rule faces' settings (or a bundle's face section) record, or None when they predate it."""
    if RULE_KEY not in face:
        return None
    rule = face[RULE_KEY]
    if not isinstance(rule, dict) or set(rule) != {"identity", "choose"} or not isinstance(rule["identity"], bool):
        raise TrackRuleError(f"{RULE_KEY} must be {{\"identity\": true|false, \"choose\": "
                             f"{'|'.join(CHOICES)}}}, not {rule!r}")
    return TrackRule(detect_every=face.get("detect_every", 1), identity=rule["identity"], choose=rule["choose"])


def served_rule(face: dict, detect_every: int | None = None) -> TrackRule:
    """The rule `predict` follows for a bundle's face section: the recorded one, else
    :data:`LEGACY_RULE` (with the stride of faces that recorded one, `crop --detect-every` before
    the rule was recorded); ``detect_every`` (predict --detect-every) overrides the stride."""
    rule = recorded_rule(face)
    if rule is None:
        rule = TrackRule(face.get("detect_every", LEGACY_RULE.detect_every), LEGACY_RULE.identity, LEGACY_RULE.choose)
    if detect_every is None:
        return rule
    return TrackRule(detect_every=detect_every, identity=rule.identity, choose=rule.choose)


def rule_difference(face: dict, stored: dict, consecutive: bool) -> str:
    """'' when faces stored with settings ``stored`` (of a video sampled ``consecutive``ly or
    not) were made by the rule of the bundle face section ``face``, else what differs. Faces of
    a bundle that records no rule are not compared."""
    wanted = recorded_rule(face)
    if wanted is None:
        return ""
    made = recorded_rule(stored)
    if made is None:
        return "cropped before the face rule was recorded"
    stride = wanted.stride(consecutive)
    if made.detect_every != stride:
        return f"detected with detect_every {made.detect_every}, the bundle's rule gives {stride}"
    if (made.identity, made.choose) != (wanted.identity, wanted.choose):
        return f"tracked by {stored[RULE_KEY]}, the bundle's rule is {face[RULE_KEY]}"
    return ""


def face_tracks(detector: FaceDetector, frames: list[np.ndarray], every: int, identity: bool,
                describer: FaceDescriber | None = None) -> list[list[Detection | None]]:
    """Every face track of ``frames``, most important first: detection on every ``every``-th
    frame, tracks linked with the identity check when ``identity`` (``describer`` tells who a
    face is; made on first need)."""
    if not identity:
        return detect_sparse(detector, frames, every)
    describer = describer or FaceDescriber()
    return detect_sparse(detector, frames, every, identity=lambda key_frames: IdentityCheck(key_frames, describer))
