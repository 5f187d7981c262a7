"""The evaluation report: plots (matplotlib), frame strips and one self-contained HTML page
(pictures embedded), next to `metrics.json`."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from speech2lip.atomic import atomic_path
from speech2lip.errors import Speech2LipError
from speech2lip.media import FPS

COLUMNS = [  # key, header, format, better
    ("psnr_db", "mouth PSNR (dB)", "{:.2f}", "higher"),
    ("ssim", "mouth SSIM", "{:.3f}", "higher"),
    ("lip_psnr_db", "lip-box PSNR (dB)", "{:.2f}", "higher"),
    ("lip_ssim", "lip-box SSIM", "{:.3f}", "higher"),
    ("cpbd", "mouth CPBD", "{:.3f}", "near ground truth"),
    ("lmd_px", "LMD (px)", "{:.2f}", "lower"),
    ("opening_r", "opening r", "{:.2f}", "higher"),
    ("opening_r_interval", "opening r, 95 % interval", "{0[0]:.2f} to {0[1]:.2f}", "narrow"),
    ("opening_amplitude", "opening amplitude", "{:.2f}x", "near 1"),
    ("opening_best_lag", "best lag (frames)", "{:+d}", "0"),
    ("lse_d", "LSE-D", "{:.2f}", "lower"),
    ("lse_c", "LSE-C", "{:.2f}", "higher"),
    ("sync_proxy_confidence", "sync proxy conf.", "{:.3f}", "higher"),
    ("sync_proxy_offset", "sync proxy offset", "{:+d}", "0"),
]
LABELS = {"ground_truth": "ground truth", "speech2lip": "speech2lip (ours)",
          "static_mouth": "static mouth", "nearest_audio": "nearest audio",
          "ground_truth_late": "ground truth 1 frame late (reference)"}  # fmt: skip


def label(name: str) -> str:
    """A method's name in the report (`pitch+4`: ours with the voice shifted)."""
    if name.startswith("pitch"):
        return f"ours, voice {name.removeprefix('pitch')} semitones"
    return LABELS.get(name, name)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def time_plot(series: dict[str, np.ndarray], ylabel: str, title: str) -> bytes:
    """Per-frame curves (frame index on x, at 25 fps)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for name, values in series.items():
        style = {"color": "black", "linewidth": 2} if name == "ground_truth" else {}
        ax.plot(np.arange(len(values)) / FPS, values, label=label(name), **style)
    ax.set_xlabel("seconds into the test split")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    labels = [label(name) for name in series]
    if max((len(label) for label in labels), default=0) > 24:  # long labels: in rows below
        fig.set_size_inches(10, 3.2 + 0.25 * len(labels))
        ax.legend(fontsize=8, ncol=1, loc="upper left", bbox_to_anchor=(0, -0.28))
    else:
        ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    return _png(fig)


def curve_plot(curves: dict[str, list[float]], search: int) -> bytes:
    """The sync expert's offset curves (mean cosine over audio shifts) per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, values in curves.items():
        ax.plot(range(-search, search + 1), values, "o-", label=label(name))
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_xlabel("audio shift (frames)")
    ax.set_ylabel("mean cosine")
    ax.set_title("sync proxy: the subject's own sync expert", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def strip(rows: list[list[np.ndarray]], names: list[str]) -> np.ndarray:
    """A grid of equally sized RGB tiles (rows x methods) with 4 px gutters."""
    h, w = rows[0][0].shape[:2]
    gap = 4
    out = np.full((len(rows) * (h + gap), len(names) * (w + gap), 3), 255, np.uint8)
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out


def encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _img(data: bytes, alt: str) -> str:
    b64 = base64.b64encode(data).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "<td class=na>n/a</td>"
    return f"<td>{fmt.format(value)}</td>"


def table(methods: dict[str, dict]) -> str:
    head = "".join(f"<th>{html.escape(h)}<br><small>{b}</small></th>" for _, h, _, b in COLUMNS)
    body = []
    for name, m in methods.items():
        cells = "".join(_cell(m.get(k), fmt) for k, _, fmt, _ in COLUMNS)
        cls = ' class="ours"' if name == "speech2lip" else ""
        body.append(f"<tr{cls}><th>{html.escape(label(name))}</th>{cells}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;
padding:4px 8px;text-align:right}th small{font-weight:normal;color:#777}tr.ours{background:#eef6ff}
td.na{color:#999}.warn{background:#fff3cd;border:1px solid #e0c36a;padding:8px 12px;margin:8px 0}
.ok{background:#e8f5e9;border:1px solid #8bc34a;padding:8px 12px;margin:8px 0}img{max-width:100%}
code{background:#f4f4f4;padding:1px 4px}"""


def gap_lines(methods: dict) -> list[str]:
    """Whether the test split tells ours' opening r from each baseline's, in words."""
    ours, lines = methods.get("speech2lip", {}), []
    for base in ("static_mouth", "nearest_audio"):
        gap = methods.get(base, {}).get("opening_r_gap_interval")
        a, b = ours.get("opening_r"), methods.get(base, {}).get("opening_r")
        if gap is None or a is None or b is None:
            continue
        told = "told apart" if gap[0] > 0 or gap[1] < 0 else "NOT told apart by these frames"
        lines.append(f"opening r, ours minus {base.replace('_', ' ')}: {a - b:+.2f} (95 % "
                     f"interval {gap[0]:+.2f} to {gap[1]:+.2f}): {told}")  # fmt: skip
    return lines


def guidance_note(train_summary) -> str | None:
    """What the audio predicts of this subject's mouth, from training's summary (`train.json`):
    the cross-validated opening r of the lip-shape regression and the gain it was given (1:
    the audio predicted the opening too weakly to scale up; 0: it predicted no code at all)."""
    path = Path(train_summary) if train_summary else None
    if path is None or not path.is_file():
        return None
    try:
        guidance = json.loads(path.read_text()).get("lip_shape_guidance")
    except (ValueError, AttributeError) as exc:
        raise Speech2LipError(f"{path}: not a readable train summary ({exc}); run the train "
                              "stage again to rewrite it") from None  # fmt: skip
    if not guidance:
        return "lip-shape guidance: off (the lips follow the audio code alone, the paper's model)"
    r, gain = guidance.get("cv_opening_r"), guidance.get("gain")
    told = "n/a" if r is None else f"{r:.2f}"
    text = ("what the audio tells: over the train frames, the inner-lip opening predicted from "
            f"the audio alone (cross-validated) follows the real one at r = {told}")  # fmt: skip
    closure = guidance.get("closure") or 0.0  # an older train.json: none
    pull = (f"; where P, B or M is heard, the predicted lips are pulled {closure:.2f} of the "
            "way to the closed mouth" if closure else "")  # fmt: skip
    if gain is None:  # not calibrated (train.shape_calibrate: false), or an older train.json
        return text + pull
    if gain == 0.0:
        return text + "; no lip shape is predicted at all, so the lips keep their mean shape"
    if gain == 1.0:
        weak = ("; too little to scale up (lip-shape gain 1), so the mouth follows new speech "
                "only a little: a longer clip of the subject talking helps")  # fmt: skip
        return text + weak + pull
    return text + f"; the predicted lip shapes are scaled by {gain:.2f} to swing as widely" + pull


def write_html(path: Path, summary: dict, pictures: dict[str, bytes]) -> None:
    from speech2lip.evaluate.voices import denoise_lines, driver_lines
    from speech2lip.evaluate.voices import lines as cross_voice_lines

    """`report.html`: the metric table, verdicts, plots, strips and the loss curves."""
    subject = html.escape(summary["subject"])
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>speech2lip: {subject}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>speech2lip evaluation: <code>{subject}</code></h1>",
             f"<p>Held-out test split: {summary['test_frames']} frames "
             f"({summary['test_frames'] / FPS:.1f} s), each re-synthesised from its own audio "
             "over its own background frame; metrics on the observed mouth box "
             "({}x{} px) of each frame.</p>".format(*summary["mouth_box"])]  # fmt: skip
    for line in summary["verdicts"]:
        cls = "ok" if line.startswith("speech2lip beats") else "warn"
        parts.append(f"<div class={cls}>{html.escape(line)}</div>")
    parts.append(table(summary["methods"]))
    if summary.get("opening_r_gaps"):
        parts.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>"
                                      for t in summary["opening_r_gaps"]) + "</ul>")  # fmt: skip
    notes = [summary["sync_note"], summary["proxy_note"], summary["landmarks_note"],
             *([summary["guidance_note"]] if summary.get("guidance_note") else []),
             "CPBD: sharpness of the greyscale mouth box (Narvekar & Karam 2011), higher is "
             "sharper; the ground truth's value is the reference (not compared in the "
             "verdicts: sharper than the ground truth is not better)."]  # fmt: skip
    parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for key, title in (("opening", "Mouth opening over time"), ("psnr", "PSNR over time"),
                       ("offsets", "Audio/video offset curves"),
                       ("strip", "Frames: ground truth | ours | baselines (mouth boxes)"),
                       ("loss", "Training losses and held-out PSNR")):  # fmt: skip
        if key in pictures:
            parts.append(f"<h2>{title}</h2>{_img(pictures[key], title)}")
    if summary.get("cross_voice"):
        parts.append("<h2>Other voices (the test audio pitch-shifted, tempo kept)</h2>")
        rows = cross_voice_lines(summary["cross_voice"])
        parts.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in rows) + "</ul>")
    if summary.get("driven"):
        parts.append("<h2>Driven by other audio (no ground truth)</h2>")
        parts.append(table(summary["driven"]))
        heard = driver_lines(summary["driven"]) + denoise_lines(summary["driven"])
        if heard:
            parts.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in heard) + "</ul>")
    parts.append(f"<p><small>speech2lip {html.escape(summary['version'])}; "
                 f"metrics.json holds every number.</small></p></body></html>")  # fmt: skip
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
