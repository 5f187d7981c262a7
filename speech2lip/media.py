"""ffmpeg/ffprobe plumbing: probing, streaming frames in and out, audio extraction.

All subprocesses take argument lists (never a shell string). Frames are `(H, W, 3) uint8` RGB.
Every failure raises `Speech2LipError` naming the input file and ffmpeg's last stderr lines.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from speech2lip.errors import MAKERS, Speech2LipError, remake

log = logging.getLogger(__name__)


def tool(name: str) -> str:
    """Absolute path of `ffmpeg` or `ffprobe`, or a clear error saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise Speech2LipError(
            f"{name} not found on PATH; install it (Debian/Ubuntu: `apt-get install ffmpeg`, "
            "or run scripts/setup.sh)"
        )
    return found


def _tail(text: str | bytes, lines: int = 3) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(kept[-lines:]) or "(no message)"


def run_tool(args: Sequence[str], what: str, path: str | Path) -> subprocess.CompletedProcess:
    """Run ffmpeg/ffprobe; on failure raise an error naming `path` and the tool's last words."""
    proc = subprocess.run(list(args), capture_output=True)
    if proc.returncode != 0:
        raise Speech2LipError(f"{what} failed for {path}: {_tail(proc.stderr)}")
    return proc


@dataclass(frozen=True)
class Probe:
    """What ffprobe says about a media file (the parts the pipeline uses)."""

    path: str
    container: str
    duration: float  # seconds (container, else longest stream)
    video_codec: str | None
    width: int  # display size, rotation applied
    height: int
    fps: float  # average frame rate
    nominal_fps: float  # r_frame_rate
    n_frames: int | None  # as stored in the header, if any
    rotation: int  # degrees, from the display matrix
    video_start: float
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    audio_start: float

    @property
    def variable_frame_rate(self) -> bool:
        return abs(self.fps - self.nominal_fps) > 0.01 * max(self.nominal_fps, 1e-6)

    def summary(self) -> dict:
        """JSON-ready summary recorded in meta.json."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {
            "variable_frame_rate": self.variable_frame_rate
        }


def _rate(text: str | None) -> float:
    try:
        value = Fraction(text or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value)


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(round(float(side["rotation"])))
    return int(stream.get("tags", {}).get("rotate", 0))


def probe(path: str | Path) -> Probe:
    """Probe `path` with ffprobe. Missing or non-media files give a clear error."""
    path = Path(path)
    if not path.exists():
        raise Speech2LipError(f"file not found: {path}")
    if not path.is_file():
        raise Speech2LipError(f"not a file: {path}")
    args = [
        tool("ffprobe"),
        "-v",
        "error",
        "-show_format",
        "-show_streams",
        "-of",
        "json",
        str(path),
    ]
    proc = subprocess.run(args, capture_output=True)
    if proc.returncode != 0:
        raise Speech2LipError(
            f"not a readable media file: {path} (ffprobe: {_tail(proc.stderr, 1)}); "
            "check the path in config.yaml and that the file is complete"
        )
    info = json.loads(proc.stdout or b"{}")
    streams = info.get("streams", [])
    fmt = info.get("format", {})
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
        ),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    durations = [
        float(x) for x in [fmt.get("duration")] + [s.get("duration") for s in streams] if x
    ]
    rotation = _rotation(video) if video else 0
    width, height = (int(video["width"]), int(video["height"])) if video else (0, 0)
    if rotation % 180:
        width, height = height, width
    return Probe(
        path=str(path),
        container=fmt.get("format_name", "?"),
        duration=max(durations) if durations else 0.0,
        video_codec=video.get("codec_name") if video else None,
        width=width,
        height=height,
        fps=_rate(video.get("avg_frame_rate")) if video else 0.0,
        nominal_fps=_rate(video.get("r_frame_rate")) if video else 0.0,
        n_frames=int(video["nb_frames"]) if video and video.get("nb_frames") else None,
        rotation=rotation,
        video_start=float(video.get("start_time", 0) or 0) if video else 0.0,
        audio_codec=audio.get("codec_name") if audio else None,
        sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        channels=int(audio["channels"]) if audio and audio.get("channels") else None,
        audio_start=float(audio.get("start_time", 0) or 0) if audio else 0.0,
    )


def read_frames(
    path: str | Path,
    width: int,
    height: int,
    filters: Sequence[str] = (),
    seek: float | None = None,
    limit: int | None = None,
) -> Iterator[np.ndarray]:
    """Decode `path` into RGB frames of `height x width` after the ffmpeg `filters` chain.

    The caller must give the size that the filter chain produces. `seek` starts at that time
    (seconds), `limit` stops after that many frames. Decoding errors (truncated or corrupt data)
    raise `Speech2LipError` after the last good frame.
    """
    args = [tool("ffmpeg"), "-nostdin", "-v", "error"]
    if seek is not None:
        args += ["-ss", f"{seek:.3f}"]
    args += ["-i", str(path)]
    if filters:
        args += ["-vf", ",".join(filters)]
    if limit is not None:
        args += ["-frames:v", str(limit)]
    args += ["-an", "-sn", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errfile)
        assert proc.stdout is not None
        try:
            while True:
                buf = proc.stdout.read(frame_bytes)
                if not buf:
                    break
                if len(buf) != frame_bytes:
                    raise Speech2LipError(
                        f"decoding {path} ended inside a frame: file is truncated"
                    )
                yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
        finally:
            proc.stdout.close()
            code = proc.wait()
        errfile.seek(0)
        err = errfile.read().decode("utf-8", "replace")
    if code != 0 or err.strip():
        raise Speech2LipError(
            f"decoding {path} failed (corrupt or truncated file?): {_tail(err)}; "
            + (remake(path) if Path(path).name in MAKERS else "re-export or re-download the video")
        )


class FrameWriter:
    """Stream RGB frames into ffmpeg. Use as a context manager; `close()` checks ffmpeg's status.

    `codec="ffv1"` writes lossless FFV1 (RGB, bit-exact); `codec="h264"` writes H.264 yuv420p at
    `crf`, muxing `audio` (a file) as AAC when given.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: int = 25,
        codec: str = "ffv1",
        crf: int = 18,
        audio: str | Path | None = None,
        threads: int = 0,
        preset: str = "medium",
    ) -> None:
        self.path, self.width, self.height = Path(path), width, height
        args = [tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "rawvideo"]
        args += ["-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if audio is not None:
            args += ["-i", str(audio)]
        if codec == "ffv1":
            args += ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", "4", "-pix_fmt", "bgr0"]
        elif codec == "h264":
            args += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf)]
            args += ["-pix_fmt", "yuv420p", "-movflags", "+faststart"]
        else:
            raise ValueError(f"unknown codec {codec!r}")
        if audio is not None:
            args += ["-c:a", "aac", "-b:a", "128k", "-map", "0:v:0", "-map", "1:a:0", "-shortest"]
        if threads:
            args += ["-threads", str(threads)]
        args.append(str(self.path))
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()/__exit__
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=self._err)
        self.count = 0
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame {frame.shape} {frame.dtype} != ({self.height}, {self.width}, 3)"
            )
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self.close()
            raise
        self.count += 1

    def close(self) -> None:
        """Finish the file; raises if ffmpeg failed. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._proc.stdin and not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        code = self._proc.wait()
        self._err.seek(0)
        err = self._err.read()
        self._err.close()
        if code != 0:
            raise Speech2LipError(f"encoding {self.path} failed: {_tail(err)}")

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._proc.kill()
            self._proc.wait()
            self._err.close()


# Mono downmix of 5.1 and 7.1 (ffmpeg's channel order FL FR FC LFE then the surrounds), with
# the ITU-R BS.775 coefficients: centre at unity, fronts and surrounds at -3 dB, no LFE. ffmpeg's
# own `-ac 1` normalises its matrix to unity sum, which leaves dialogue about 10 dB quieter.
DOWNMIX = {6: (0.7071, 0.7071, 1.0, 0.0, 0.7071, 0.7071),
           8: (0.7071, 0.7071, 1.0, 0.0, 0.7071, 0.7071, 0.7071, 0.7071)}  # fmt: skip


def audio_channels(path: str | Path) -> int:
    """The channel count of the first audio stream of `path` (0 without one)."""
    args = [tool("ffprobe"), "-v", "error", "-select_streams", "a:0", "-show_entries",
            "stream=channels", "-of", "csv=p=0", str(path)]  # fmt: skip
    proc = run_tool(args, "probing the audio", path)
    text = proc.stdout.strip().splitlines()
    return int(text[0]) if text and text[0].strip().isdigit() else 0


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of `path` to mono float32 in [-1, 1] at `sample_rate`.
    Mono and stereo are mixed by ffmpeg (stereo: the mean); 5.1 and 7.1 with `DOWNMIX`, scaled
    down only if the mix would clip."""
    channels = audio_channels(path)
    matrix = DOWNMIX.get(channels)
    args = [tool("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-vn", "-sn"]
    if matrix is None:
        args += ["-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-"]
    else:
        args += ["-map", "0:a:0", "-ar", str(sample_rate), "-f", "f32le", "-"]
    proc = run_tool(args, "decoding the audio", path)
    if proc.stderr.strip():
        raise Speech2LipError(
            f"decoding the audio of {path} failed (corrupt or truncated file?): "
            f"{_tail(proc.stderr)}"
        )
    if matrix is None:
        return np.frombuffer(proc.stdout, np.int16).astype(np.float32) / 32768.0
    frames = np.frombuffer(proc.stdout, np.float32).reshape(-1, channels)
    mono = frames @ np.asarray(matrix, np.float32)
    peak = float(np.abs(mono).max()) if len(mono) else 0.0
    if peak > 1.0:
        log.info("audio of %s: the %d-channel downmix peaks at %.2f; scaled to 1", path,
                 channels, peak)  # fmt: skip
        mono = mono / peak
    return mono.astype(np.float32)


@functools.cache
def has_filter(name: str) -> bool:
    """Whether this ffmpeg has the filter `name` (the static fallback build lacks some)."""
    proc = subprocess.run([tool("ffmpeg"), "-hide_banner", "-filters"], capture_output=True)
    return any(line.split()[1:2] == [name] for line in proc.stdout.decode().splitlines())


def pitch_shift(wav: np.ndarray, semitones: float, sample_rate: int = 16000) -> np.ndarray:
    """Mono float `wav` shifted in pitch by `semitones` with its tempo kept, the same length:
    ffmpeg's rubberband (formants move with the pitch, like another voice), or where it is
    missing, a resampling (asetrate) undone in time by atempo."""
    ratio = 2.0 ** (semitones / 12.0)
    if has_filter("rubberband"):
        chain = f"rubberband=pitch={ratio:.6f}"
    else:
        chain = f"asetrate={sample_rate * ratio:.3f},aresample={sample_rate},atempo={1 / ratio:.6f}"
    fmt = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1"]
    args = [tool("ffmpeg"), "-nostdin", "-v", "error", *fmt, "-i", "-", "-af", chain, *fmt, "-"]
    proc = subprocess.run(args, input=np.asarray(wav, np.float32).tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise Speech2LipError(f"pitch-shifting the audio by {semitones} semitones failed: "
                              f"{_tail(proc.stderr)}")  # fmt: skip
    out = np.frombuffer(proc.stdout, np.float32)[: len(wav)]
    return np.pad(out, (0, len(wav) - len(out)))


FPS = 25


SAMPLE_RATE = 16000


SAMPLES_PER_FRAME = SAMPLE_RATE // FPS


def output_size(box: tuple[int, int, int, int], size: int | None) -> tuple[int, int]:
    """The resampled frame's (width, height) for crop `box`: its long side scaled to `size`
    and its short side in proportion (rounded to even), so the aspect ratio never changes;
    `size` None keeps the box's size."""
    w, h = int(box[2]), int(box[3])
    if size is None:
        return w, h
    if w >= h:
        return size, max(2, int(round(size * h / w / 2)) * 2)
    return max(2, int(round(size * w / h / 2)) * 2), size


def crop_scale(crop: dict) -> tuple[float, float]:
    """(x, y) output pixels per source pixel of meta.json's `crop` (one number in a meta.json
    written before the scale was recorded per axis)."""
    scale = crop["scale"]
    if isinstance(scale, (int, float)):
        return float(scale), float(scale)
    return float(scale[0]), float(scale[1])


def scale_filters(box: tuple[int, int, int, int], size: int | None) -> list[str]:
    """ffmpeg filters: constant 25 fps, crop to `box`, resize to `output_size(box, size)`."""
    x, y, w, h = box
    filters = [f"fps={FPS}", f"crop={w}:{h}:{x}:{y}"]
    out_w, out_h = output_size(box, size)
    if (w, h) != (out_w, out_h):
        filters.append(f"scale={out_w}:{out_h}:flags=lanczos")
    return filters + ["setsar=1"]
