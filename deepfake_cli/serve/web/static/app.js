// dfd serve's page: upload one clip to /v1/predict (progress shown), draw the verdict and its
// evidence, and on demand fetch /v1/report and show it in a sandboxed frame. Nothing from the network.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const drop = $("drop"), input = $("file");
  let current = null;  // the File last sent

  function show(id, on) { $(id).hidden = !on; }
  function fail(message) { $("error").textContent = message; show("error", true); }
  function pct(x) { return (100 * x).toFixed(1) + "%"; }

  function send(url, file, responseType, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.open("POST", url);
      xhr.responseType = responseType;
      xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
      xhr.upload.onload = () => onProgress && onProgress(1);
      xhr.onload = () => resolve(xhr);
      xhr.onerror = () => reject(new Error("the server could not be reached"));
      xhr.send(form);
    });
  }

  function errorOf(xhr) {
    let body = xhr.response;
    if (typeof body === "string") { try { body = JSON.parse(body); } catch (e) { body = null; } }
    if (body && body.error) return body.error;
    return "the server answered " + xhr.status;
  }

  async function predict(file) {
    current = file;
    show("error", false); show("result", false); show("report", false);
    $("report-status").textContent = "";
    show("progress", true);
    $("bar-fill").style.width = "0";
    $("progress-text").textContent = "Uploading " + file.name + " (" + (file.size / 1048576).toFixed(1) + " MB)…";
    try {
      const xhr = await send("/v1/predict", file, "json", (f) => {
        $("bar-fill").style.width = pct(f);
        if (f >= 1) $("progress-text").textContent = "Uploaded; finding faces and scoring…";
      });
      show("progress", false);
      if (xhr.status === 200 || (xhr.response && xhr.response.schema_version)) {
        render(xhr.response);
        if (xhr.status !== 200) fail(errorOf(xhr));
      } else {
        fail(errorOf(xhr));
      }
    } catch (e) {
      show("progress", false);
      fail(e.message);
    }
  }

  function render(r) {
    const verdict = $("verdict");
    verdict.className = "verdict " + (r.verdict || "");
    const words = { fake: "Likely fake", real: "Likely real", uncertain: "Uncertain: too close to call" };
    verdict.textContent = r.verdict ? (words[r.verdict] || "Verdict: " + r.verdict) : "No verdict";
    const p = r.probability, t = r.threshold;
    $("gauge-fill").style.width = p == null ? "0" : pct(p);
    $("gauge-fill").style.background = r.verdict === "fake" ? "var(--fake)" : (r.verdict === "real" ? "var(--real)" : "#888");
    $("gauge-threshold").style.left = t == null ? "0" : "calc(" + pct(t) + " - 1px)";
    const band = r.uncertain_band || [];  // [lo, hi): the model's, [] for an ensemble or under --threshold
    if (band.length === 2) {
      $("gauge-band").style.left = pct(band[0]);
      $("gauge-band").style.width = pct(band[1] - band[0]);
      show("gauge-band", true);
    } else {
      show("gauge-band", false);
    }
    const windows = r.windows || [];
    const windowed = windows.length > 1;  // several windows, each with its own calibrated P(fake)
    $("numbers").textContent = p == null ? "" :
      "P(fake) = " + p.toFixed(3) + " against the threshold " + t.toFixed(3) + " (" + seen(r) + ")";
    $("judged").textContent = judged(r);
    const list = $("warnings");
    list.textContent = "";
    for (const w of r.warnings || []) { const li = document.createElement("li"); li.textContent = w; list.appendChild(li); }
    // windows: their calibrated P(fake), on the threshold's scale; one window: the raw face scores, without it
    drawFrames(windowed ? windows.map((w) => w.probability) : (r.frame_scores || []), windowed ? t : null,
               windowed ? "window" : "face");
    $("frames-hint").textContent = windowed ?
      "The calibrated P(fake) of each window the verdict judged, in clip order; the dashed line is the threshold." :
      "The CNN's score for each face of the judged window, in clip order, before the sequence model and calibration: " +
      "not on the scale of the threshold, which applies to the clip's P(fake) above.";
    $("details").textContent = "model " + r.model + " (sha256 " + String(r.model_sha256).slice(0, 12) + "…), dfd " +
      r.dfd_version + ", schema " + r.schema_version + (r.tracks > 1 ? "; " + r.tracks + " face tracks scored" : "");
    show("report-button", Boolean(r.verdict));
    show("result", true);
  }

  function seen(r) {  // how much of the clip was judged, word for word as report/clip_report.judged_summary says it
    const w = r.windows || [];
    const several = w.length > 1 && w[0].faces > 1;
    let text = several ? r.faces + " faces in " + w.length + " windows" :
      r.faces ? r.faces + " faces in " + r.frames + " frames" : r.frames + " whole frames";
    if (r.clip_frames > 1) {
      text += " of " + r.clip_frames + (several ? " frames" : "") +
        (r.duration_s ? " (" + r.duration_s.toFixed(1) + " s)" : "");
    }
    return text;
  }

  function judged(r) {  // which part of the clip the verdict judged (the result's windows, when it has them)
    const w = r.windows || [];
    if (!w.length) return "";
    const first = w[0], last = w[w.length - 1];
    let text = "Judged frames " + first.first_frame + "–" + last.last_frame + (r.clip_frames ? " of " + r.clip_frames : "");
    if (first.start_s != null && last.end_s != null) text += " (" + first.start_s.toFixed(1) + "–" + last.end_s.toFixed(1) + " s)";
    const top = r.most_suspicious_window == null ? null : w[r.most_suspicious_window];
    if (w.length > 1 && top) {
      text += "; the most suspicious part: frame " + top.first_frame +
        (top.start_s != null ? " at " + top.start_s.toFixed(1) + " s" : "") + ", P(fake) " + top.probability.toFixed(3);
    }
    return text + ".";
  }

  function drawFrames(scores, threshold, what) {
    const svg = $("frames"), ns = "http://www.w3.org/2000/svg";
    svg.textContent = "";
    if (!scores.length) return;
    const w = 300 / scores.length;
    scores.forEach((s, i) => {
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", (i * w + w * 0.1).toFixed(2));
      bar.setAttribute("width", (w * 0.8).toFixed(2));
      bar.setAttribute("y", (100 - 100 * s).toFixed(2));
      bar.setAttribute("height", (100 * s).toFixed(2));
      bar.setAttribute("fill", "#5b6b8c");
      const title = document.createElementNS(ns, "title");
      title.textContent = what + " " + (i + 1) + ": " + s.toFixed(3);
      bar.appendChild(title);
      svg.appendChild(bar);
    });
    if (threshold != null) {
      const line = document.createElementNS(ns, "line");
      line.setAttribute("x1", "0"); line.setAttribute("x2", "300");
      line.setAttribute("y1", (100 - 100 * threshold).toFixed(2)); line.setAttribute("y2", (100 - 100 * threshold).toFixed(2));
      line.setAttribute("stroke", "#1b1b1f"); line.setAttribute("stroke-dasharray", "4 3");
      svg.appendChild(line);
    }
  }

  async function report() {
    if (!current) return;
    $("report-status").textContent = "Building the report (the first one loads the heatmap model; it can take a minute)…";
    try {
      const xhr = await send("/v1/report", current, "text");
      if (xhr.status !== 200) { $("report-status").textContent = errorOf(xhr); return; }
      const url = URL.createObjectURL(new Blob([xhr.response], { type: "text/html" }));
      $("report").src = url;
      show("report", true);
      $("report-status").textContent = "";
    } catch (e) {
      $("report-status").textContent = e.message;
    }
  }

  input.addEventListener("change", () => { if (input.files.length) predict(input.files[0]); });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  $("report-button").addEventListener("click", report);

  fetch("/v1/model").then((r) => r.ok ? r.json() : null).then((m) => {
    if (!m) return;
    let text = "Model " + m.name + ", threshold " + m.threshold.toFixed(3) + "; uploads up to " +
      Math.round(m.limits.max_upload_bytes / 1048576) + " MB.";
    if (m.card && m.card.terms) text += " Terms: " + [].concat(m.card.terms).join("; ");
    $("model").textContent = text;
  }).catch(() => {});
})();
