"""Training and rendering cost benchmark on a subject's warp output.

    python scripts/bench_train.py --index results/sample/warp/index.json [--steps 10]
                                  [--expert results/sample/sync_expert/expert.pt]
                                  [--device auto] [--threads 2] [--compare-steps 500]

1. Training speed of the `demo` and `paper` presets: seconds per step and frames per second in
   each phase of the schedule (L_m + L_d; + L_w; + L_s), timed over `--steps` steps after a
   warm-up, with the real loss function and batches.
2. The cost of one rendered frame, side by side in one run:
   - ours: the demo preset's lip model (render-time estimator on the shared pixel corners)
     + C2O from the learned depth + the Blend-Net on the mouth box only;
   - the paper's configuration, built from our own modules: an 8x256 MLP with a skip, 10 uv
     and 4 time frequencies, the 4-corner ensemble queried per pixel on a 120x80 crop, and the
     U-Net (32-64-128, the Blend-Net's architecture) over the whole 512x512 frame.
   Both are timed (seconds per frame, and core-seconds = seconds x threads) and counted
   (FLOPs with torch's FlopCounterMode).
3. With `--compare-steps N`: the held-out quality of both configurations after the same N-step
   schedule (see `compare_quality`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def time_it(fn, repeat: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def train_speed(data, preset: str, steps: int, device: str, expert) -> dict:
    from speech2lip.config import TrainConfig
    from speech2lip.data.batches import to_device
    from speech2lip.models.assembled import Speech2Lip
    from speech2lip.train.loop import StepBatches, losses
    from speech2lip.train.presets import resolve

    opts = resolve(TrainConfig(preset=preset))
    opts = dataclasses.replace(opts, sync_weight=opts.sync_weight if expert is not None else 0.0)
    model = Speech2Lip(data.canonical, opts.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = StepBatches(data, data.split_ids("train"), opts)
    phases = {"L_m + L_d": 0, "+ L_w": opts.mouth_start}
    if expert is not None:
        phases["+ L_w + L_s"] = opts.sync_start
    out = {}
    for name, step0 in phases.items():
        items = iter([batches[step0 + k] for k in range(steps + 1)])

        def one(items=items):
            step, arrays = next(items)
            terms = losses(model, to_device(arrays, device), opts, step, None, expert)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()

        sec = time_it(one, steps)
        out[name] = {"s_per_step": sec, "steps_per_s": 1 / sec,
                     "frames_per_s": opts.batch_frames / sec}  # fmt: skip
    return out


def render_cost(data, device: str, threads: int, repeat: int) -> dict:
    from speech2lip.config import TrainConfig
    from speech2lip.data.batches import to_tensors
    from speech2lip.models import BlendNet, ImplicitLips, render_points
    from speech2lip.models.assembled import Speech2Lip
    from speech2lip.models.lips import crop_uv
    from speech2lip.train.presets import resolve

    ours = Speech2Lip(data.canonical, resolve(TrainConfig()).model).to(device).eval()
    b = to_tensors(
        data, data.split_ids("test")[:1], ours.sizes.audio_radius, device, ours.sizes.features
    )

    def ours_frame():
        with torch.no_grad():
            ours.render_mouth(b["mel_context"], b["time"], b["mouth"], b["mouth_origin"],
                              b["relative_pose"], b["c2o_grid"], b["c2o_mask"], 4)  # fmt: skip

    p = resolve(TrainConfig(preset="paper")).model
    paper_mlp = ImplicitLips(p.audio_dim, p.uv_freqs, p.time_freqs, p.lips_width,
                             p.lips_layers, p.lips_skip).to(device).eval()  # fmt: skip
    uv, cell = crop_uv(120, 80, device)
    audio, t = torch.randn(1, p.audio_dim, device=device), torch.rand(1, device=device)
    unet = BlendNet(p.blend_channels).to(device).eval()
    frame = torch.rand(1, 3, 512, 512, device=device)
    mask = torch.zeros(1, 1, 512, 512, device=device)

    def paper_lips():
        with torch.no_grad():
            render_points(paper_mlp, uv[None], audio, t, cell, random=False)

    def paper_unet():
        with torch.no_grad():
            unet(frame, mask, mask)

    torch.set_num_threads(threads)
    out = {}
    for name, fn in (("ours (lips + C2O + Blend-Net on the mouth box)", ours_frame),
                     ("paper: 8x256 MLP, 4-corner, 120x80", paper_lips),
                     ("paper: U-Net on the 512x512 frame", paper_unet)):  # fmt: skip
        sec = time_it(fn, repeat)
        out[name] = {"s_per_frame": sec, "core_s_per_frame": sec * threads,
                     "gflop_per_frame": flops(fn) / 1e9}  # fmt: skip
    paper = [v for k, v in out.items() if k.startswith("paper")]
    out["paper total"] = {k: sum(p[k] for p in paper) for k in paper[0]}
    return out


def compare_quality(index: str, steps: int, device: str, threads: int, out: str) -> dict:
    """Train ours (the demo preset) and the paper's sizes with the same schedule (the demo
    preset's: frames, pixels, learning rate, L_w's start, `steps` steps; no L_s) and report
    held-out PSNR.
    The paper's U-Net runs on the mouth box here (the data holds no whole frames); over the
    whole frame it could only change pixels that the metric does not look at."""
    from pathlib import Path

    from speech2lip.config import TrainConfig
    from speech2lip.train import run
    from speech2lip.train.presets import resolve

    paper_sizes = resolve(TrainConfig(preset="paper")).model
    results = {}
    for name, extra in (("ours", {}), ("paper sizes", {"model": paper_sizes})):
        cfg = TrainConfig(steps=steps, sync_weight=0.0, checkpoint_every=steps, **extra)
        summary = run(index, Path(out) / name.replace(" ", "_"), cfg, threads=threads,
                      resume="no", device=device)  # fmt: skip
        results[name] = {"lips": summary["heldout_lips_psnr_db"],
                         "mouth": summary["heldout_mouth_psnr_db"],
                         "seconds": summary["seconds"]}  # fmt: skip
        print(f"quality {name:12s} held-out lips {results[name]['lips']:.2f} dB, mouth box "
              f"{results[name]['mouth']:.2f} dB after {steps} steps "
              f"({results[name]['seconds']:.0f} s)")  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="results/sample/warp/index.json")
    parser.add_argument("--expert", default="", help="a usable expert.pt, to time L_s too")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", nargs="*", default=["demo", "paper"])
    parser.add_argument(
        "--compare-steps",
        type=int,
        default=0,
        help="also train ours and the paper's sizes this many steps each and "
        "compare held-out PSNR (slow on a CPU: the paper's MLP is ~30x ours)",
    )
    parser.add_argument("--compare-dir", default="/tmp/s2l-compare")
    args = parser.parse_args()

    from speech2lip.data.shards import WarpData
    from speech2lip.models.checkpoint import pick_device
    from speech2lip.models.syncnet import load_sync_expert

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}")
    data = WarpData(args.index)
    expert = load_sync_expert(args.expert).to(device).requires_grad_(False) if args.expert else None
    for preset in args.presets:
        for phase, r in train_speed(data, preset, args.steps, device, expert).items():
            print(
                f"train {preset:5s} {phase:14s} {r['s_per_step']:.3f} s/step  "
                f"{r['steps_per_s']:.2f} steps/s  {r['frames_per_s']:.1f} frames/s"
            )
    cost = render_cost(data, device, args.threads, args.repeat)
    for what, r in cost.items():
        print(
            f"render {what:48s} {r['s_per_frame'] * 1000:8.1f} ms/frame "
            f"{r['core_s_per_frame']:6.2f} core-s {r['gflop_per_frame']:8.1f} GFLOP"
        )
    ours = next(v for k, v in cost.items() if k.startswith("ours"))
    total = cost["paper total"]
    print(
        f"paper / ours: {total['s_per_frame'] / ours['s_per_frame']:.1f}x time, "
        f"{total['gflop_per_frame'] / ours['gflop_per_frame']:.1f}x FLOPs"
    )
    if args.compare_steps:
        compare_quality(args.index, args.compare_steps, device, args.threads, args.compare_dir)


if __name__ == "__main__":
    main()
