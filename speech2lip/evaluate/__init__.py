"""Stage `evaluate`: metrics of the rendered videos against ground truth, baselines, report.

On the held-out test split, `results/{subject}/video.mp4` (ours) is measured against the
subject's own frames, next to the ground truth itself (the reference column: its PSNR and
LMD are trivially perfect, its CPBD and sync scores are what real footage gets) and two
baselines the stage renders through the same composition (C2O with the learned depth, paste,
Blend-Net), so only the lips differ:

- `static_mouth`: the canonical frame's lips for every frame;
- `nearest_audio`: for each test frame, the lips of the training frame whose mel window is
  nearest (Euclidean) to its own.

Metrics (`speech2lip.evaluate.metrics`): mouth-box PSNR and SSIM, CPBD, LMD (MediaPipe's lip
points by default, FAN 48-67 with `landmarks: face_alignment`), LSE-D / LSE-C with
syncnet_python's SyncNet when `evaluate.syncnet` names its `syncnet_v2.model` (else "not
available"), and always a sync proxy: the subject's own sync expert's offset and confidence
(clearly labelled as such). Driven videos get the reference-free metrics. Writes
`metrics.json`, `report.html` (self-contained) and the baselines' videos.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from speech2lip import __version__
from speech2lip.atomic import write_json
from speech2lip.config import EvaluateConfig, RenderConfig
from speech2lip.errors import Speech2LipError
from speech2lip.evaluate import voices
from speech2lip.inputs import read_clip_audio, read_meta
from speech2lip.media import FPS, SAMPLES_PER_FRAME

log = logging.getLogger(__name__)

BETTER = {"psnr_db": "higher", "ssim": "higher", "lip_psnr_db": "higher", "lip_ssim": "higher",
          "lmd_px": "lower", "opening_r": "higher",
          "lse_d": "lower",
          "lse_c": "higher", "sync_proxy_confidence": "higher"}  # fmt: skip


def nearest_audio_ids(mel: np.ndarray, test_ids: np.ndarray, train_ids: np.ndarray) -> np.ndarray:
    """For each test frame, the training frame whose mel window `(80, 16)` is nearest."""
    train = mel[train_ids].reshape(len(train_ids), -1).astype(np.float64)
    norms = (train**2).sum(axis=1)
    out = np.empty(len(test_ids), np.int64)
    for lo in range(0, len(test_ids), 256):
        q = mel[test_ids[lo : lo + 256]].reshape(-1, train.shape[1]).astype(np.float64)
        d = norms[None] - 2 * q @ train.T  # + |q|^2, the same for every candidate
        out[lo : lo + 256] = train_ids[np.argmin(d, axis=1)]
    return out


def summarise(track, reference, sync: dict | None, lse: dict | None) -> dict:
    """A method's averages (nan-aware) for the metric table."""
    from speech2lip.evaluate.measure import lmd
    from speech2lip.evaluate.metrics import articulation

    def mean(values):
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else None

    out = {"psnr_db": mean(track.psnr), "ssim": mean(track.ssim),
           "lip_psnr_db": mean(track.lip_psnr), "lip_ssim": mean(track.lip_ssim),
           "cpbd": mean(track.cpbd),
           "lmd_px": lmd(track, reference) if reference is not None else None,
           **(articulation(track.opening, reference.opening) if reference is not None else {}),
           "faces_found": int(sum(p is not None for p in track.lips)),
           "frames": len(track.cpbd)}  # fmt: skip
    if sync is not None:
        out.update(sync_proxy_confidence=sync["confidence"], sync_proxy_offset=sync["offset"],
                   sync_proxy_curve=sync["mean_cos"])  # fmt: skip
    if lse is not None:
        out.update(lse_d=lse["lse_d"], lse_c=lse["lse_c"], lse_offset=lse["offset"])
    return out


def verdicts(methods: dict) -> list[str]:
    """Whether ours beats each baseline on each metric, in words."""
    ours = methods["speech2lip"]
    lines = []
    for base in ("static_mouth", "nearest_audio"):
        if base not in methods:
            continue
        lost, compared = [], []
        for key, better in BETTER.items():
            a, b = ours.get(key), methods[base].get(key)
            if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
                continue
            compared.append(key)
            if (a <= b) if better == "higher" else (a >= b):
                lost.append(key)
        name = base.replace("_", " ")
        lines.append(
            f"speech2lip beats the {name} baseline on every compared metric "
            f"({', '.join(compared)}; CPBD is a reference, not a goal)"
            if not lost
            else f"speech2lip does NOT beat the {name} baseline on: {', '.join(lost)}"
        )
    return lines  # fmt: skip


class Evaluation:
    """Inputs shared by the measurements of every method."""

    def __init__(self, model, index, frames, meta, cfg: EvaluateConfig, device: str) -> None:
        from speech2lip.data.shards import WarpData
        from speech2lip.models.checkpoint import load_model
        from speech2lip.renderer import FIELDS, Renderer

        self.cfg, self.device = cfg, device
        self.meta = read_meta(meta)
        self.frames_path = Path(frames)
        self.data = WarpData(index, fields=FIELDS + ["mel", "landmarks", "canonical_lips"])
        self.model = load_model(model, device)
        self.test = self.data.split_ids("test")
        self.mel = self.data.read_field("mel", np.arange(len(self.data)))
        ex, ey, ew, eh = self.data.index["extended_box"]
        self.box = (ew, eh)
        self.renderer = Renderer(self.model, self.data, RenderConfig(), device)
        self.syncnet = None
        if cfg.syncnet:
            from speech2lip.models.syncnet_v2 import load_syncnet_v2

            self.syncnet = load_syncnet_v2(cfg.syncnet).to(device)

    def train_spread(self) -> float:
        """The std of the subject's inner-lip opening over its train split (px, from the
        landmarks stage): how widely the real mouth moves over the whole recording."""
        from speech2lip.geometry.topology import inner_lip_opening

        points = self.data.read_field("landmarks", self.data.split_ids("train"))
        return float(np.std(inner_lip_opening(points)))

    def decode(self, video: Path, pasted_back: bool, limit: int):
        """A rendered video's frames in the resampled geometry."""
        from speech2lip.media import read_frames, scale_filters

        w, h = self.meta["width"], self.meta["height"]
        filters = []
        if pasted_back:
            crop = self.meta["crop"]
            filters = scale_filters(tuple(crop["box"]), self.meta["config"].get("size"))
        return read_frames(video, w, h, filters, limit=limit)

    def ground_truth(self, ids: np.ndarray):
        from speech2lip.media import read_frames

        w, h = self.meta["width"], self.meta["height"]
        start = int(ids[0])
        return read_frames(self.frames_path, w, h, seek=start / FPS if start else None,
                           limit=len(ids))  # fmt: skip

    def face_boxes(self, background: np.ndarray) -> list | None:
        """SyncNet's face crops over `background` frames (None without SyncNet)."""
        from speech2lip.evaluate.measure import face_crop_box

        if self.syncnet is None:
            return None
        points = self.data.read_field("landmarks", background)
        return [face_crop_box(p, self.meta["width"], self.meta["height"]) for p in points]

    def sync_proxy(self, track, expert, mel: np.ndarray, search: int = 7) -> dict | None:
        """The own expert's offset curve over the track's windows (mel: per frame)."""
        import torch

        from speech2lip.models.expert import curve_summary, offset_curve

        if expert is None or len(track.sync_crops) < 6:
            return None
        crops = torch.stack(track.sync_crops)
        starts = np.arange(len(crops) - 4)
        curve = offset_curve(expert, crops, torch.from_numpy(np.ascontiguousarray(mel)),
                             starts, search)  # fmt: skip
        return curve_summary(curve, search)

    def lse(self, track, wav: np.ndarray) -> dict | None:
        """LSE-D / LSE-C of the track's face crops against `wav` (None without SyncNet)."""
        if self.syncnet is None:
            return None
        from speech2lip.evaluate.metrics import distance_curve, lse
        from speech2lip.models.syncnet_v2 import syncnet_features

        v, a = syncnet_features(self.syncnet, np.stack(track.face_crops), wav)
        return lse(distance_curve(v, a))

    def summary_of(self, track, reference, expert, mel: np.ndarray, wav: np.ndarray) -> dict:
        """`summarise` with the track's sync proxy and LSE."""
        return summarise(track, reference, self.sync_proxy(track, expert, mel),
                         self.lse(track, wav))  # fmt: skip


def render_baselines(ev: Evaluation, test_wav, source, out_dir: Path) -> dict[str, Path]:
    """The two baselines through the same composition with other lips: the canonical frame's
    (static mouth) and, per frame, those of the training frame with the nearest mel window."""
    import torch

    from speech2lip.renderer import stream_video

    dev, test = ev.device, ev.test
    canonical = np.array([int(ev.data.canonical["canonical_index"])])
    static = torch.from_numpy(ev.data.read_field("canonical_lips", canonical)[0])
    static = static.permute(2, 0, 1).float() / 255
    nearest = nearest_audio_ids(ev.mel, test, ev.data.split_ids("train"))
    near_lips = ev.data.read_field("canonical_lips", nearest)

    def static_lips(out_ids, bg):
        return static[None].expand(len(out_ids), -1, -1, -1).to(dev)

    def nearest_lips(out_ids, bg):
        return torch.from_numpy(near_lips[out_ids]).permute(0, 3, 1, 2).float().to(dev) / 255

    videos = {}
    for name, lips_for in (("static_mouth", static_lips), ("nearest_audio", nearest_lips)):
        path = out_dir / f"{name}.mp4"
        log.info("evaluate: rendering the %s baseline", name)
        stream_video(ev.renderer, ev.mel[test], test, test_wav, path, ev.frames_path, ev.meta,
                     source, lips_for=lips_for, desc=name)  # fmt: skip
        videos[name] = path
    return videos


def measure_test(ev: Evaluation, videos: dict, pasted: bool, expert, test_wav, pick):
    """Every method's track and summary over the test split: the ground truth first, then the
    ground truth one frame late (frame i + 1 in place of frame i: what good sync scores), then
    ours and the baselines."""
    from speech2lip.evaluate.measure import lip_boxes_of, measure

    cfg, test = ev.cfg, ev.test
    origins = ev.data.read_field("mouth_origin", test)
    lip_boxes = lip_boxes_of(ev.data.read_field("landmarks", test), ev.meta["width"],
                             ev.meta["height"])  # fmt: skip
    faces, mel = ev.face_boxes(test), ev.mel[test[0] :]
    log.info("evaluate: measuring the ground truth")
    gt = measure("ground_truth", ev.ground_truth(test), origins, ev.box, None, faces,
                 cfg.landmarks, cfg.cpbd_edges, keep=pick)  # fmt: skip
    tracks = {"ground_truth": gt}
    methods = {"ground_truth": ev.summary_of(gt, None, expert, mel, test_wav)}
    methods["ground_truth"].update(psnr_db=None, ssim=None, lip_psnr_db=None, lip_ssim=None,
                                   lmd_px=0.0, opening_r=1.0, opening_amplitude=1.0,
                                   opening_best_lag=0)  # fmt: skip
    if len(test) > 1:
        log.info("evaluate: measuring the ground truth one frame late")
        late = measure("ground_truth_late", ev.ground_truth(test[1:]), origins[:-1], ev.box,
                       ev.ground_truth(test[:-1]), None if faces is None else faces[:-1],
                       cfg.landmarks, cfg.cpbd_edges, lip_boxes=lip_boxes[:-1])  # fmt: skip
        methods["ground_truth_late"] = ev.summary_of(late, gt, expert, mel, test_wav)
    for name, path in videos.items():
        log.info("evaluate: measuring %s", name)
        tracks[name] = measure(name, ev.decode(path, pasted, len(test)), origins, ev.box,
                               ev.ground_truth(test), faces, cfg.landmarks, cfg.cpbd_edges,
                               keep=pick, lip_boxes=lip_boxes)  # fmt: skip
        methods[name] = ev.summary_of(tracks[name], gt, expert, mel, test_wav)
    if "speech2lip" in tracks:  # is ours' opening r told apart from each baseline's?
        from speech2lip.evaluate.metrics import r_gap_interval

        for base in ("static_mouth", "nearest_audio"):
            if base in tracks:
                methods[base]["opening_r_gap_interval"] = r_gap_interval(
                    tracks["speech2lip"].opening, tracks[base].opening, gt.opening
                )
    return tracks, methods


def notes(cfg: EvaluateConfig, expert, expert_state: str) -> dict:
    """What each sync figure is, in words, for the report."""
    sync_note = ("LSE-D / LSE-C: syncnet_python's SyncNet (" + cfg.syncnet + "), 5-frame "
                 "windows, offsets ±15; face crops from the ground truth's landmarks standing in "
                 "for its S3FD boxes") if cfg.syncnet else (
        "LSE-D / LSE-C: not available (no syncnet_v2.model: set evaluate.syncnet in "
        "config.yaml to syncnet_python's syncnet_v2.model)")  # fmt: skip
    proxy_note = ("sync proxy: the subject's OWN sync expert (trained on its train split, not "
                  "SyncNet): confidence = its offset curve's peak over median, offset in frames; "
                  "a proxy, not comparable with published LSE numbers") if expert is not None else (
        f"sync proxy: not available ({expert_state})")  # fmt: skip
    landmarks_note = (f"LMD: {cfg.landmarks} mouth landmarks of each frame vs the ground "
                      "truth's, each set mean-centred; pixels of the resampled frame")  # fmt: skip
    return {"sync_note": sync_note, "proxy_note": proxy_note, "landmarks_note": landmarks_note}


def report_pictures(tracks: dict, methods: dict, pick, box, loss_curve) -> dict:
    """The report's figures: opening and PSNR over time, offset curves, the frame strip and
    the training loss curve (when there is one)."""
    from speech2lip.evaluate import report

    def named(key: str) -> str:  # the opening plot's legend says how each mouth follows
        m = methods.get(key, {})
        if key == "ground_truth" or None in (m.get("opening_r"), m.get("opening_amplitude")):
            return key
        return (
            f"{report.label(key)}: r {m['opening_r']:.2f}, amplitude "
            f"{m['opening_amplitude']:.2f}x, best lag {m['opening_best_lag']:+d}"
        )

    pictures = {
        "opening": report.time_plot({named(k): t.opening for k, t in tracks.items()}, "px",
                                    "inner-lip opening (landmarks)"),
        "psnr": report.time_plot({k: t.psnr for k, t in tracks.items() if t.psnr}, "dB",
                                 "mouth-box PSNR against the ground truth"),
    }  # fmt: skip
    curves = {k: m["sync_proxy_curve"] for k, m in methods.items() if "sync_proxy_curve" in m}
    if curves:
        pictures["offsets"] = report.curve_plot(curves, 7)
    blank = np.zeros((box[1], box[0], 3), np.uint8)  # a frame a short video lacks
    rows = [[tracks[k].tiles.get(i, blank) for k in tracks] for i in pick]
    pictures["strip"] = report.encode_png(report.strip(rows, list(tracks)))
    if loss_curve and Path(loss_curve).is_file():
        pictures["loss"] = Path(loss_curve).read_bytes()
    return pictures


def run(
    model,
    index,
    frames,
    meta,
    audio,
    video,
    expert,
    out_dir,
    cfg: EvaluateConfig,
    figures=None,
    loss_curve=None,
    train_summary=None,
    driven: list[str] | tuple = (),
    source: str | None = None,
    threads: int = 1,
    device: str = "auto",
) -> dict:
    """Measure ours (`video`, with render's `figures`, default `<video stem>.json`), the ground
    truth and the baselines on the test split, and the `driven` videos; write `metrics.json`
    and `report.html` into `out_dir` (with `loss_curve`, training's plot, and
    `train_summary`, its train.json, when given)."""
    import torch

    from speech2lip.evaluate import report
    from speech2lip.models.checkpoint import pick_device
    from speech2lip.models.expert import load_checked

    t0 = time.monotonic()
    torch.set_num_threads(max(1, threads))
    out_dir, video = Path(out_dir), Path(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = Evaluation(model, index, frames, meta, cfg, pick_device(device))
    if not video.is_file():
        raise Speech2LipError(f"{video} not found: run the render stage first")
    figures = Path(figures) if figures else video.with_suffix(".json")
    render_stats = json.loads(figures.read_text()) if figures.is_file() else {}
    rendered = render_stats.get("config", {})
    ev.renderer.cfg = RenderConfig(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in rendered.items()})  # fmt: skip
    pasted = bool(render_stats.get("pasted_back", False))
    own_expert, _, expert_state = load_checked(expert)
    wav = read_clip_audio(audio, len(ev.data))
    test = ev.test
    test_wav = wav[test[0] * SAMPLES_PER_FRAME : (test[-1] + 1) * SAMPLES_PER_FRAME]
    videos = {"speech2lip": video}
    if cfg.baselines:
        videos.update(render_baselines(ev, test_wav, source, out_dir))
    videos.update(voices.render_pitch_shifted(ev, test_wav, audio, source, out_dir))
    pick = np.unique(np.linspace(0, len(test) - 1, cfg.strip_frames).round().astype(int))
    tracks, methods = measure_test(ev, videos, pasted, own_expert, test_wav, pick)
    summary = {
        "subject": out_dir.parent.name, "version": __version__,
        "test_frames": len(test), "mouth_box": list(ev.box), "methods": methods,
        "verdicts": verdicts(methods) if cfg.baselines else [],
        "opening_r_gaps": report.gap_lines(methods),
        "cross_voice": voices.cross_voice(methods, cfg.pitch_shifts),
        "driven": voices.measure_driven(ev, driven, own_expert, ev.train_spread()),
        **notes(cfg, own_expert, expert_state),
        "guidance_note": report.guidance_note(train_summary),
        "rendered_pasted_back": pasted, "seconds": None,
    }  # fmt: skip
    for line in summary["verdicts"]:
        (log.info if line.startswith("speech2lip beats") else log.warning)("evaluate: %s", line)
    for line in (
        summary["opening_r_gaps"]
        + voices.lines(summary["cross_voice"])
        + voices.driver_lines(summary["driven"])
    ):
        log.info("evaluate: %s", line)
    pictures = report_pictures(tracks, methods, pick, ev.box, loss_curve)
    summary["seconds"] = time.monotonic() - t0
    write_json(out_dir / "metrics.json", summary)
    report.write_html(out_dir / "report.html", summary, pictures)
    log.info("evaluate: %s in %.1f s", out_dir / "report.html", summary["seconds"])
    return summary
