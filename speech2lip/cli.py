"""Command line: `python -m speech2lip <stage> --help`.

Thin by design: parse, build the stage's typed config, call the stage's `run`, and turn a
`Speech2LipError` into one line on stderr and exit status 1.

A stage's parameters come, later ones winning, from: the schema's defaults, `--config FILE`
(its stage section, with `--subject`'s overrides), `--params JSON` (how Snakemake rules pass the
whole section), and one flag per parameter (`--crop auto`, `--size 256`, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from typing import Any

import yaml

from speech2lip import __version__
from speech2lip.errors import Speech2LipError

log = logging.getLogger("speech2lip")


def _add_stage_flags(parser: argparse.ArgumentParser, stage: str) -> None:
    from speech2lip.config import load_schema

    def add(group, props: dict, prefix: str = "") -> None:
        for name, spec in props.items():
            if spec.get("type") == "object" and "properties" in spec:  # a nested section
                nested = parser.add_argument_group(f"{stage}.{name} parameters (nested section)")
                add(nested, spec["properties"], f"{prefix}{name}.")
                continue
            text = " ".join(str(spec.get("description", "")).split())
            group.add_argument(
                f"--{name.replace('_', '-')}",
                dest=f"param_{prefix}{name}",
                default=argparse.SUPPRESS,  # absent unless given, so `--size null` is kept
                metavar="VALUE",
                type=yaml.safe_load,  # so lists, numbers and null parse
                help=f"{text} [default: {spec.get('default')!r}]".replace("%", "%%"),
            )

    props = load_schema()["properties"][stage]["properties"]
    group = parser.add_argument_group(f"{stage} parameters (config.yaml section '{stage}')")
    add(group, props)
    group.add_argument("--config", metavar="FILE", help="read this stage's section from FILE")
    group.add_argument("--subject", help="with --config: merge this subject's overrides")
    group.add_argument("--params", metavar="JSON", help="the whole section as JSON (used by rules)")


def _stage_config(args: argparse.Namespace, stage: str) -> Any:
    from speech2lip.config import (
        ConfigError,
        load_config,
        section_from_json,
        stage_config,
        stage_section,
    )

    section: dict[str, Any] = {}
    if args.config:
        config = load_config(args.config)
        if args.subject and args.subject not in config["subjects"]:
            raise ConfigError(f"{args.config}: no subject {args.subject!r} under subjects:")
        section = stage_section(config, stage, args.subject)
    if args.params:
        try:
            section.update(json.loads(args.params))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ConfigError(f"--params for {stage}: not a JSON object: {exc}") from None
    for key, value in vars(args).items():
        if key.startswith("param_"):
            *parents, name = key[len("param_") :].split(".")
            place = section
            for parent in parents:  # a nested key (train.model.lips_width): merge, not replace
                place = place.setdefault(parent, {})
            place[name] = value
    return stage_config(stage, section_from_json(stage, json.dumps(section)))


def _run_stage(args: argparse.Namespace) -> None:
    """Build the stage's config and call its module's `run` with every handoff by name (the
    names of the rule's inputs and outputs, of the options and of `run`'s parameters)."""
    import importlib

    cfg = _stage_config(args, args.command)
    module = importlib.import_module(f"speech2lip.{args.command}")
    kwargs = {name: getattr(args, name) for name, _, _ in STAGES[args.command][2]}
    for name in ("threads", "resume", "device"):
        if getattr(args, name, None) is not None:
            kwargs[name] = getattr(args, name)
    if "driven" in kwargs:  # an empty list from a rule arrives as one empty argument
        kwargs["driven"] = [p for p in kwargs["driven"] or [] if p]
    module.run(cfg=cfg, **{k: v for k, v in kwargs.items() if v is not None})


# stage: (one-line help, description, handoffs (name, help, required)): each handoff is
# an option --name (dashes for underscores), a keyword of the stage's `run` and, in its rule,
# the input or output (or, for folders, param) of the same name.
STAGES: dict[str, tuple[str, str, list[tuple[str, str, bool]]]] = {
    "sample": (
        "make the built-in synthetic demo subject",
        "Make the built-in demo subject: a real public-domain face photo (scikit-image's "
        "astronaut) saying espeak-ng speech, its mouth driven by the phoneme timings, with slow "
        "head motion and blinks. Synthetic, offline, reproducible.",
        [("video", "video to write [default: data/sample/video.mp4]", False),
         ("controls", "also write the per-frame controls (.npz)", False)],
    ),
    "resample": (
        "source video -> 25 fps lossless frames, 16 kHz mono audio, meta.json",
        "Resample any video (any container, codec or frame rate, variable frame rate included) "
        "to constant 25 fps frames stored losslessly (frames.mkv, FFV1), 16 kHz mono audio "
        "(audio.wav) of exactly 640 samples per frame, and meta.json (sizes, crop box, "
        "train/test split, source probe). Crops a square around the face by default.",
        [("video", "source video with the person talking (and an audio track)", True),
         ("out_dir", "output folder, e.g. results/<subject>/resample", True)],
    ),
    "landmarks": (
        "dense face landmarks per frame",
        "Find dense face landmarks in every resampled frame: MediaPipe Face Mesh (478 points, "
        "offline) by default, or FAN (68 points) from face-alignment when its weights are in "
        "the torch hub cache. Short gaps are interpolated; too many faceless frames is an error "
        "naming them. Writes landmarks.npz and landmarks.json.",
        [("frames", "resample/frames.mkv", True), ("meta", "resample/meta.json", True),
         ("out_dir", "output folder, e.g. results/<subject>/landmarks", True)],
    ),
    "fit3dmm": (
        "subject face model + focal, pose and expression per frame",
        "Build a morphable face model from the subject's own landmarks (mean shape + PCA "
        "expression basis; no download) and fit one focal length and every frame's head pose "
        "and expression to the landmarks (robust, batched); smooth the poses. Writes fit.npz, "
        "fit.json and qa_pose.png.",
        [("landmarks", "landmarks/landmarks.npz", True), ("meta", "resample/meta.json", True),
         ("out_dir", "output folder, e.g. results/<subject>/fit3dmm", True)],
    ),
    "pose_depth": (
        "canonical frame, per-frame face depth, canonical head depth",
        "Choose the canonical frame, rasterise the fitted mesh into a depth map for every "
        "frame (D_o) and extend the canonical frame's face depth over the head (D_c). Writes "
        "geometry.h5, pose_depth.json and QA pictures.",
        [("frames", "resample/frames.mkv", True), ("meta", "resample/meta.json", True),
         ("landmarks", "landmarks/landmarks.npz", True), ("fit", "fit3dmm/fit.npz", True),
         ("out_dir", "output folder, e.g. results/<subject>/pose_depth", True)],
    ),
    "warp": (
        "canonical lip crops, C2O grids, audio features -> HDF5 shards",
        "Warp every frame into the canonical view over the lip box (O2C: the lip model's "
        "training target, with its validity mask), cut the observed mouth box and its C2O "
        "sampling grid, compute Wav2Lip mel windows and SyncNet MFCCs, and write them with poses "
        "and landmarks into sharded, compressed, checksummed HDF5 (shards/*.h5, index.json), "
        "built in parallel. Also warp.json and QA pictures.",
        [("frames", "resample/frames.mkv", True), ("meta", "resample/meta.json", True),
         ("audio", "resample/audio.wav", True), ("landmarks", "landmarks/landmarks.npz", True),
         ("geometry", "pose_depth/geometry.h5", True),
         ("out_dir", "output folder, e.g. results/<subject>/warp", True)],
    ),
    "sync_expert": (
        "load or train the lip-sync expert and check it on ground truth",
        "The lip-sync expert (Wav2Lip's SyncNet_color) behind the sync loss: load the "
        "pretrained lipsync_expert.pth named by --pretrained, or train one on the subject's "
        "train split (in-sync vs off-sync windows of its own video); then check it on the "
        "held-out ground truth (audio/video offset curve, confidence, pair accuracy). Writes "
        "expert.pt (Wav2Lip's checkpoint format), sync_expert.json and offset_curve.png.",
        [("index", "warp/index.json", True),
         ("out_dir", "output folder, e.g. results/<subject>/sync_expert", True)],
    ),
    "train": (
        "train the lip model, canonical depth and Blend-Net",
        "Train the implicit lip model (audio -> canonical lips), the learned canonical depth "
        "and the Blend-Net on the warp stage's shards, with checkpoints in OUT_DIR/ckpt "
        "(resumable bit for bit). Writes model.pt, train.json, loss_curve.png, train_log.csv, "
        "heldout.csv and previews/.",
        [("index", "warp/index.json", True),
         ("out_dir", "output folder, e.g. results/<subject>/train", True),
         ("expert", "the sync_expert stage's expert.pt (for L_s; without it L_s is off)", False),
         ("audio", "resample/audio.wav: the clip's audio, for train.voice_shifts (without it "
          "the lip-shape regression hears the subject's voice only)", False)],
    ),
    "render": (
        "render the test split (own audio) or driving audio to an mp4",
        "Render video with the trained model: audio -> canonical lips -> C2O with the learned "
        "canonical depth -> paste into background frames -> Blend-Net, streamed into ffmpeg "
        "(H.264) with the audio muxed in. Without --driving: the held-out test split from its "
        "own audio over its own frames (comparable with the ground truth). With --driving FILE "
        "(any audio format and sample rate): that speech over the subject's frames played "
        "forwards and backwards from --start-frame. --pose-offset/--pose-sweep re-pose the head.",
        [("model", "train/model.pt", True), ("index", "warp/index.json", True),
         ("frames", "resample/frames.mkv", True), ("meta", "resample/meta.json", True),
         ("audio", "resample/audio.wav (the test split's own audio)", True),
         ("video", "video to write, e.g. results/<subject>/video.mp4", True),
         ("figures", "its figures (JSON) [default: VIDEO with .json]", False),
         ("driving", "driving audio (any format); default: the test split", False),
         ("source", "the original video, to paste the result back into its full frames "
          "(render.output_size: source)", False)],
    ),
    "evaluate": (
        "metrics, baselines and the report of the test split and the driven videos",
        "Measure the rendered test split (VIDEO) against the ground truth, next to the ground "
        "truth itself and two baselines rendered through the same composition (static mouth, "
        "nearest audio): mouth-box PSNR, SSIM, CPBD, LMD, LSE-D/LSE-C (with --syncnet, "
        "syncnet_python's syncnet_v2.model) and a sync proxy from the subject's own expert. "
        "Driven videos (--driven) get the metrics that need no ground truth. Writes "
        "metrics.json and a self-contained report.html into OUT_DIR.",
        [("model", "train/model.pt", True), ("index", "warp/index.json", True),
         ("frames", "resample/frames.mkv", True), ("meta", "resample/meta.json", True),
         ("audio", "resample/audio.wav", True),
         ("video", "the rendered test split (video.mp4)", True),
         ("figures", "render's figures of VIDEO (video.json) [default: VIDEO with .json]", False),
         ("expert", "sync_expert/expert.pt (the sync proxy)", True),
         ("loss_curve", "train/loss_curve.png, for the report", False),
         ("train_summary", "train/train.json: what the audio predicts of the mouth, for the "
          "report", False),
         ("out_dir", "output folder, e.g. results/<subject>/evaluate", True),
         ("driven", "driven videos to measure too", False),
         ("source", "the original video (for the baselines' paste-back)", False)],
    ),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speech2lip",
        description="speech2lip: personalised lip-sync video. Each subcommand is one stage of "
        "the Snakemake pipeline and can be run alone.",
    )
    parser.add_argument("--version", action="version", version=f"speech2lip {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name, (short, description, handoffs) in STAGES.items():
        p = sub.add_parser(name, help=short, description=description)
        files = p.add_argument_group("inputs and outputs (the rule's names)")
        for arg, text, required in handoffs:
            files.add_argument(f"--{arg.replace('_', '-')}", dest=arg, required=required,
                               metavar="PATH", nargs="*" if arg == "driven" else None,
                               help=text)  # fmt: skip
        if name in ("pose_depth", "warp", "sync_expert", "train", "render", "evaluate"):
            p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                           help="worker processes / CPU threads (default: all CPUs)")  # fmt: skip
        if name in ("train", "render", "evaluate"):
            p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
        if name == "train":
            p.add_argument("--resume", choices=["auto", "yes", "no"], default="auto",
                           help="continue from OUT_DIR/ckpt/last.pt: auto (when its options "
                           "match, else start over), yes (or refuse), no")  # fmt: skip
        _add_stage_flags(p, name)
        p.set_defaults(func=_run_stage)
    _add_live(sub)
    return parser


def _add_live(sub) -> None:
    p = sub.add_parser(
        "live", help="speak into a browser and watch the subject say it, in real time",
        description="Serve one page on http://HOST:PORT/ that sends the microphone to this "
        "server over WebRTC and shows the subject saying it, with the audio, in sync. One client "
        "at a time (a second gets a busy page). Reads the subject's pipeline outputs next to "
        "MODEL (results/<subject>/{resample,warp}). Each session's figures (frames rendered and "
        "dropped, latency) are logged when it ends.",
    )  # fmt: skip
    p.add_argument("model", help="results/<subject>/train/model.pt")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    p.add_argument("--port", type=int, default=8080, help="port to listen on [8080]")
    p.add_argument("--size", type=int, default=512,
                   help="longer side of the video in pixels, at most the subject's frames; "
                   "smaller is cheaper to send [512]")  # fmt: skip
    p.add_argument("--audio", metavar="FILE",
                   help="play this audio file (looped) instead of the microphone")  # fmt: skip
    p.add_argument("--start-frame", type=int, default=0,
                   help="first background frame of the subject's video [0]")  # fmt: skip
    p.add_argument("--frames", type=int, default=250,
                   help="background frames kept in memory and played forwards and backwards "
                   "[250: 10 s]")  # fmt: skip
    p.add_argument(
        "--no-silence",
        dest="silence",
        action="store_false",
        help="keep the audio's lips in silence (default: the mouth rests there)",
    )
    p.add_argument("--no-match-level", dest="match_level", action="store_false",
                   help="hear the microphone as loud as it is (default: brought to the "
                   "subject's speech level, for the features only)")  # fmt: skip
    p.add_argument("--budget-ms", type=float, default=100.0,
                   help="time a frame may take from its audio's arrival to leaving (render, "
                   "queue, jitter); the video runs this much behind the model's look-ahead "
                   "[100]")  # fmt: skip
    p.add_argument("--threads", type=int, default=max(1, len(os.sched_getaffinity(0)) - 1),
                   help="CPU threads for the model (one core is left for video encoding) "
                   "[CPUs - 1]")  # fmt: skip
    p.set_defaults(func=_run_live)


def _run_live(args: argparse.Namespace) -> None:
    from speech2lip.live import run

    run(args.model, host=args.host, port=args.port, size=args.size, audio=args.audio,
        start_frame=args.start_frame, frames=args.frames, silence=args.silence,
        match_level=args.match_level, budget_ms=args.budget_ms,
        threads=args.threads)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    # Quiet the C++ logs of MediaPipe/TFLite before they are imported.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings(
        "ignore", message="SymbolDatabase.GetPrototype"
    )  # protobuf vs mediapipe
    words = sys.argv[1:] if argv is None else argv
    if "live" in words[:3]:
        # Live mode's small per-frame matrix products wake numpy's OpenBLAS threads, which then
        # spin: most of a core taken from the renderer and the video encoder. Before numpy loads.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if "SLURM_JOB_ID" in os.environ:  # cluster logs say where each stage ran
        log.info("running as SLURM job %s on %s", os.environ["SLURM_JOB_ID"],
                 os.environ.get("SLURMD_NODENAME", "?"))  # fmt: skip
    try:
        args.func(args)
    except Speech2LipError as exc:
        print(f"speech2lip {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"speech2lip {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
