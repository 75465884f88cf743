"""`predict --report out.html`: one self-contained page of evidence per clip.

The page holds the verdict and calibrated P(fake) with its threshold and the bundle's
validation figures; a chart over the clip of what the verdict judged (each window's calibrated
P(fake), or one window's CNN face scores); the scored face crops beside their class activation
maps; every face track with its probability, or why it was not scored (of the most suspicious
window, when there are several); the warnings; and the clip's metadata. Images are embedded
as base64 PNG and the page loads nothing from anywhere, so it opens offline in any browser and
can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import cv2
import numpy as np

from deepfake_cli.files import atomic_write_text


def png_data_uri(image_rgb: np.ndarray) -> str:
    """An RGB image as a ``data:image/png;base64,...`` URI."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("cannot encode the image as PNG")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def windowed(result) -> bool:
    """Whether the verdict judged several windows of consecutive faces (the CLI's '... in 3 windows')."""
    return len(result.windows) > 1 and result.windows[0]["faces"] > 1


def judged_summary(result) -> str:
    """How much of the clip a verdict (a PredictResult) judged, word for word as `dfd predict`'s
    line says it: '75 faces in 3 windows of 50 frames (2.0 s)' for several windows of consecutive
    faces, else e.g. '25 faces in 50 frames of 250 (10.0 s)' or '1 whole frames'."""
    several = windowed(result)
    seen = (f"{result.faces} faces in {len(result.windows)} windows" if several
            else f"{result.faces} faces in {result.frames} frames" if result.faces else f"{result.frames} whole frames")
    if result.clip_frames > 1:  # how much of the clip was judged
        seen += (f" of {result.clip_frames}" + (" frames" if several else "")
                 + (f" ({result.duration_s:.1f} s)" if result.duration_s else ""))
    return seen


def clip_fps(result) -> float | None:
    """The clip's frame rate from its length, or None when its times are unknown (an image)."""
    return result.clip_frames / result.duration_s if result.duration_s and result.clip_frames > 1 else None


def window_positions(result) -> list[float]:
    """Where each window sits on the chart's axis: its centre frame's time in the clip (its centre
    frame number when the clip's times are unknown)."""
    fps = clip_fps(result)
    centres = [(w["first_frame"] + w["last_frame"]) / 2 for w in result.windows]
    return [c / fps for c in centres] if fps else centres


def score_curve(result, band: list | None = None, aggregation: str = "mean") -> np.ndarray:
    """RGB image: what the verdict judged, on a scale the lines drawn apply to, over the whole clip.
    Several windows (of consecutive faces, or single frames spread over the clip, each scored
    alone): each one's calibrated P(fake) at its centre frame's time, against the threshold, the
    uncertain band shaded (``aggregation``: how the windows' make the clip's). One window (a face
    sequence the BiLSTM reads as a whole): the CNN's score of each face, which is not on the
    threshold's scale, so no threshold line is drawn and the clip's probability is named in the
    title. The time axis spans the clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=100)
    draw_judged(ax, result, band, aggregation)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    image = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def draw_judged(ax, result, band: list | None, aggregation: str) -> None:
    """Draw :func:`score_curve`'s chart on matplotlib axes ``ax``."""
    windows = list(result.windows)
    fps = clip_fps(result)
    if len(windows) > 1:
        x = window_positions(result)
        y = [w["probability"] for w in windows]
        if windowed(result):
            label = f"calibrated P(fake) of each window of {windows[0]['faces']} faces (at its centre)"
        else:
            label = "calibrated P(fake) of each judged frame"
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, color="tab:blue", label=label)
        if band and band[1] > band[0]:
            ax.axhspan(band[0], band[1], color="tab:orange", alpha=0.15, label="uncertain")
        ax.axhline(result.threshold, color="tab:red", linestyle="--", linewidth=1,
                   label=f"threshold {result.threshold:.3f}")
        if result.most_suspicious_window is not None:
            top = result.most_suspicious_window
            ax.plot([x[top]], [y[top]], "o", color="tab:red", markersize=7, fillstyle="none", label="most suspicious")
        ax.set_title(f"clip: {result.verdict}, P(fake) {result.probability:.3f}"
                     + (f", the {aggregation} of the {len(windows)} windows' P(fake)" if windowed(result) else ""),
                     fontsize=9)
    else:
        x = [i / fps for i in result.frame_indices] if fps else list(result.frame_indices)
        ax.plot(x, result.frame_scores, marker="o", markersize=3, linewidth=1.2, color="tab:gray",
                label="CNN score of each face (uncalibrated)")
        ax.set_title(f"clip: {result.verdict}, P(fake) {result.probability:.3f} from the sequence as a whole "
                     f"(threshold {result.threshold:.3f}); the face scores are not on that scale", fontsize=8)
    if fps:
        ax.set_xlim(0, result.clip_frames / fps)
    elif result.clip_frames > 1:
        ax.set_xlim(0, result.clip_frames - 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time in the clip (s)" if fps else "frame")
    ax.set_ylabel("P(fake)")
    ax.legend(loc="best", fontsize=7)  # where it hides the fewest points


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.3em; word-break: break-all; } h2 { font-size: 1.05em; margin-top: 1.6em; }
.verdict { display: inline-block; padding: .3em .8em; border-radius: .3em; color: #fff; font-weight: bold; }
.fake { background: #c0392b; } .real { background: #27ae60; } .uncertain { background: #d68910; }
table { border-collapse: collapse; font-size: .9em; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
img { max-width: 100%; } .warn { color: #a35c00; } .small { color: #666; font-size: .85em; }
"""


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def write_clip_report(out: Path, result, info, bundle_config, frame_indices, crops: np.ndarray | None,
                      cams: np.ndarray | None) -> Path:
    """Write the page for one predicted clip (``result``: a PredictResult; ``info``: its VideoInfo)."""
    from deepfake_cli.report.heatmaps import CAM_RANGE, colour_bar, grid, overlay

    from deepfake_cli.nets.card import validation_figures

    validation = validation_figures(bundle_config)  # what its model card gives: the best video-level figure
    calibrated_on = ("the out-of-fold scores of its recipe's cross-validation" if "crossval" in bundle_config.metrics
                     else "its validation videos")
    verdict = html.escape(result.verdict)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>dfd: {html.escape(Path(result.path).name)}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(result.path)}</h1>",
             f"<p><span class='verdict {verdict}'>{verdict}</span> P(fake) = <b>{result.probability:.3f}</b> "
             f"(threshold {result.threshold:.3f}) &middot; {html.escape(judged_summary(result))}</p>",
             "<p class='small'>Model " + html.escape(bundle_config.name) + " (" + html.escape(bundle_config.backbone)
             + f", {bundle_config.input_size} px)"
             + (f"; on its validation videos ({validation['real']} real, {validation['fake']} fake): AUC "
                f"{validation['auc']:.3f} ({html.escape(validation['level'])})" if validation
                else "; no validation figures recorded")
             + f". P(fake) is calibrated on {calibrated_on}; a figure on other media may differ.</p>"]
    if result.warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>"
                                                       for w in result.warnings) + "</ul>")
    band = list(getattr(bundle_config, "uncertain", []) or [])
    if band:
        parts.append(f"<p class='small'>Uncertain: P(fake) from {band[0]:.3f} up to {band[1]:.3f}, where the model's "
                     "calls on videos it was not trained on were right less than 4 times in 5.</p>")
    parts.append("<h2>What was judged</h2>")
    aggregation = getattr(bundle_config, "video_aggregation", "mean")
    parts.append(f"<img alt='scores over the clip' src='{png_data_uri(score_curve(result, band, aggregation))}'>")
    if windowed(result):
        parts.append("<p class='small'>Windows judged: " + "; ".join(
            f"frames {w['first_frame']}–{w['last_frame']}"
            + (f" ({w['start_s']:.2f}–{w['end_s']:.2f} s)" if w["start_s"] is not None else "")
            + f", P(fake) {w['probability']:.3f}" for w in result.windows) + ".</p>")
    top = result.windows[result.most_suspicious_window] if windowed(result) and (
        result.most_suspicious_window is not None) else None
    where = "" if top is None else (f"the most suspicious window (frames {top['first_frame']}–{top['last_frame']}"
                                    + (f", {top['start_s']:.2f}–{top['end_s']:.2f} s" if top["start_s"] is not None
                                       else "") + ")")
    if crops is not None and len(crops):
        pairs = [np.concatenate([c, overlay(c, m)], axis=1) for c, m in zip(crops, cams)]
        parts.append("<h2>Faces scored, and where the CNN saw evidence</h2>"
                     + (f"<p class='small'>The faces of {html.escape(where)}.</p>" if top else "") +
                     "<p class='small'>Each crop beside its class activation map: red pushed the CNN's score towards "
                     "fake, blue towards real, untinted pixels hardly moved it.</p>"
                     f"<p class='small'>real &larr; <img alt='colour scale' src='{png_data_uri(colour_bar())}' "
                     f"style='vertical-align: middle'> &rarr; fake (&plusmn;{CAM_RANGE:g} logit per position)</p>")
        parts.append(f"<img alt='faces and heatmaps' src='{png_data_uri(grid(pairs))}'>")
    parts.append("<h2>Face tracks</h2>")
    if top is not None:  # the tracks shown are that window's, their P(fake) its own, not the clip's
        parts.append(f"<p class='small'>The face tracks of {html.escape(where)}, with that window's P(fake). The "
                     f"verdict's P(fake) {result.probability:.3f} is the {html.escape(aggregation)} of the "
                     f"{len(result.windows)} windows' listed above.</p>")
    parts.append(_table([(r["track"], r["frames_seen"], f"{r['face_side']:.0f} px", "yes" if r["scored"] else "no",
                          "" if r["probability"] is None else f"{r['probability']:.3f}", r["reason"])
                         for r in result.track_reports],
                        ("track", "frames seen", "face size", "scored",
                         "P(fake) in that window" if top is not None else "P(fake)", "why not scored")))
    parts.append("<h2>Clip</h2>")
    meta = [("resolution", f"{info.width} x {info.height}"), ("frames per second", f"{info.fps:.2f}"),
            ("codec", info.codec or "?"), ("duration", f"{info.duration_s:.1f} s"), ("rotation", f"{info.rotation}°"),
            ("frames", info.frame_count)]
    if info.header_frame_count is not None:
        meta.append(("frames claimed by the header", info.header_frame_count))
    parts.append(_table(meta))
    parts.append("<p class='small'>Made by dfd " + html.escape(bundle_config.dfd_version or "") + ".</p></body></html>")
    atomic_write_text(out, "\n".join(parts) + "\n")
    return out
