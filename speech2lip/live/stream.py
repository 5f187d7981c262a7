"""Live mode's timing: the incoming audio stream, the model's look-ahead, when each frame is
rendered and when it leaves, and the mouth's rest in silence. Pure logic: every method takes
the time (`now`, seconds on one monotonic clock) from its caller, so tests drive it with a fake
clock.

Stream time starts when the first audio sample arrives (`t0`); stream sample s (16 kHz) is
stream time s / 16000 and output frame i is stream time i / 25. Frame i can be rendered once
the audio its model input spans has arrived (`samples_needed`: its mel windows reach about
0.17 s past the frame's start with the default audio radius 2), and it leaves the server at
`t0 + i / 25 + delay`, as does the audio it was rendered from: both senders' clocks map stream
time to the same wall time, which is how the browser keeps them in sync (RTCP sender reports).
A frame that cannot leave on time is dropped, never sent late, so video and audio never drift.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from speech2lip.data.audio import (
    AUDIO_OFFSET,
    FPS,
    HOP,
    MEL_WINDOW,
    N_FFT,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    mel_start,
    melspectrogram,
)
from speech2lip.data.posteriors import (
    FRAME_HOP,
    PRIOR_FRAMES,
    WINDOW,
    at_mel_frames,
    cepstra,
    posteriors_of,
)
from speech2lip.data.voice import CHUNK, HANGOVER, THRESHOLD

PACKET = SAMPLE_RATE // 50  # 20 ms: WebRTC's audio packets
GUARD_MEL = 3  # mel frames computed before the first one used, so none sees the slice's edge


def samples_needed(i: int, radius: int, ppg: bool = False) -> int:
    """Stream samples output frame `i` needs: through the last mel frame of its last audio
    window (window i + AUDIO_OFFSET + radius), whose centred STFT reaches N_FFT / 2 samples past
    its centre; with phone posteriors (`ppg`), through the 10 ms frames the posteriors at that
    centre are interpolated from, their second deltas' 3 frames and half a window more; and
    through the voice-activity chunks of frame i + HANGOVER."""
    last_window = max(0, i + AUDIO_OFFSET + radius)
    mel = int(mel_start(last_window)) + MEL_WINDOW - 1
    need = mel * HOP + N_FFT // 2
    if ppg:
        need = max(need, (-(-mel * HOP // FRAME_HOP) + 3) * FRAME_HOP + WINDOW // 2)
    vad_chunk = ((i + HANGOVER + 1) * SAMPLES_PER_FRAME - 1) // CHUNK
    return max(need, (vad_chunk + 1) * CHUNK)


def lookahead(radius: int, ppg: bool = False) -> float:
    """Seconds of audio past a frame's start that it waits for (the largest over the mel
    frames' 80/25 cycle)."""
    extra = max(samples_needed(i, radius, ppg) - i * SAMPLES_PER_FRAME for i in range(10, 20))
    return extra / SAMPLE_RATE


def context_mel_frames(i: int, radius: int) -> np.ndarray:
    """`(2r+1, 16)`: the mel frames of frame `i`'s audio windows i + AUDIO_OFFSET - r .. + r
    (clamped at the stream's start)."""
    windows = np.maximum(0, i + AUDIO_OFFSET + np.arange(-radius, radius + 1))
    return mel_start(windows)[:, None] + np.arange(MEL_WINDOW)[None]


class LivePosteriors:
    """The stream's phone-class posteriors (`speech2lip.data.posteriors`, the `ppg`
    features): each 10 ms frame scored once, when the audio its deltas reach has come, less a
    running cepstral mean: `prior` (the subject's own audio's) counted as `prior_frames`
    frames, then every sounding frame heard (offline takes the whole file's mean; `adapt`
    False keeps `prior`). The last `keep` frames are kept."""

    GUARD = 5  # frames scored before the first kept: its window and deltas see real samples

    def __init__(self, prior: np.ndarray, prior_frames: int = PRIOR_FRAMES, adapt: bool = True,
                 keep: int = 400) -> None:  # fmt: skip
        self.total = np.asarray(prior, np.float64) * prior_frames
        self.count = float(prior_frames)
        self.adapt, self.keep = adapt, keep
        self.shares = np.zeros((0, 0), np.float32)
        self.first = 0  # the stream frame of shares[0]

    def update(self, stream: AudioStream, upto: int, gain: float = 1.0) -> None:
        """Score the stream's 10 ms frames through `upto` not scored yet."""
        lo = self.first + len(self.shares)
        if upto < lo:
            return
        g = lo - self.GUARD
        wav = stream.samples(g * FRAME_HOP, (upto + 3) * FRAME_HOP + WINDOW // 2)
        cep, silent = cepstra(wav * np.float32(gain))
        new = slice(lo - g, upto - g + 1)
        if self.adapt:
            sounding = ~silent[new]
            self.total += cep[new][sounding].sum(axis=0)
            self.count += int(sounding.sum())
        shares = posteriors_of(cep, silent, self.total / self.count)[new]
        self.shares = np.concatenate([self.shares.reshape(-1, shares.shape[1]), shares])
        self.shares = self.shares[-self.keep :]
        self.first = upto + 1 - len(self.shares)


class AudioStream:
    """The incoming 16 kHz mono audio and when each part of it arrived. Keeps only the last
    `keep_s` seconds (memory stays flat however long the session).

    `t0` maps stream time to wall time: the packet starting at sample s is expected at
    `t0 + s / 16000`. Network jitter leaves it alone; when every packet for `window_s` comes
    more than `tolerance_s` late (the sender stalled, or its clock runs slow), or every one
    comes early (a fast clock), `t0` moves by the smallest such error: everything scheduled
    from it (frames, outgoing audio) shifts together, so the output follows the input instead of
    dropping every frame from then on, or lagging more and more."""

    def __init__(self, keep_s: float = 4.0, window_s: float = 0.5,
                 tolerance_s: float = 0.02) -> None:  # fmt: skip
        self.keep = int(keep_s * SAMPLE_RATE)
        self.window_s, self.tolerance_s = window_s, tolerance_s
        self.buffer = np.zeros(0, np.float32)
        self.start = 0  # stream index of buffer[0]
        self.received = 0  # samples received so far
        self.t0: float | None = None  # stream time 0 on the wall clock
        self.shifts: list[float] = []  # each move of t0 (s; > 0: the input came late)
        self.errors: deque[tuple[float, float]] = deque()  # (when, how late) over the window
        self.arrivals: deque[tuple[int, float]] = deque()  # (samples received, when)

    def push(self, samples: np.ndarray, now: float) -> None:
        samples = np.asarray(samples, np.float32).reshape(-1)
        if self.t0 is None:
            self.t0 = now - self.received / SAMPLE_RATE
        self._track(now - (self.t0 + self.received / SAMPLE_RATE), now)
        self.buffer = np.concatenate([self.buffer, samples])
        self.received += len(samples)
        self.arrivals.append((self.received, now))
        while len(self.arrivals) > 1 and self.arrivals[0][0] < self.received - self.keep:
            self.arrivals.popleft()
        drop = len(self.buffer) - self.keep
        if drop > 0:
            self.buffer = self.buffer[drop:]
            self.start += drop

    def _track(self, error: float, now: float) -> None:
        """Move `t0` when the packets of the last `window_s` were all late, or all early,
        by more than `tolerance_s` (`error`: this packet's lateness)."""
        self.errors.append((now, error))
        while self.errors[0][0] < now - self.window_s:
            self.errors.popleft()
        if now - self.errors[0][0] < 0.9 * self.window_s:
            return  # not a whole window yet
        late = min(e for _, e in self.errors)
        early = max(e for _, e in self.errors)
        shift = late if late > self.tolerance_s else early if early < -self.tolerance_s else 0.0
        if shift:
            self.t0 += shift
            self.shifts.append(shift)
            self.errors.clear()

    def arrival(self, sample_end: int) -> float:
        """When the packet that completed stream samples [0, `sample_end`) arrived (call with
        growing `sample_end`: the packets before it are forgotten)."""
        while len(self.arrivals) > 1 and self.arrivals[0][0] < sample_end:
            self.arrivals.popleft()
        return self.arrivals[0][1]

    def samples(self, lo: int, hi: int) -> np.ndarray:
        """Stream samples [lo, hi) (zeros before the stream started or after what has come)."""
        out = np.zeros(hi - lo, np.float32)
        a, b = max(lo, self.start), min(hi, self.start + len(self.buffer))
        if b > a:
            out[a - lo : b - lo] = self.buffer[a - self.start : b - self.start]
        return out

    def mel_context(self, i: int, radius: int, gain_db: float = 0.0) -> np.ndarray:
        """Frame `i`'s model input `(2r+1, 80, 16)`: the mel windows of frames i + AUDIO_OFFSET
        - r .. + r (clamped at the stream's start), equal to the offline
        `speech2lip.renderer.mel_contexts` of the whole recording. `gain_db` scales the audio
        first (level matching)."""
        frames = context_mel_frames(i, radius)
        lo_mel, hi_mel = int(frames[0, 0]), int(frames[-1, -1])
        q = lo_mel - GUARD_MEL if lo_mel >= GUARD_MEL else 0  # the slice's first mel frame
        wav = self.samples(q * HOP, hi_mel * HOP + N_FFT // 2)
        if gain_db:
            wav = wav * np.float32(10 ** (gain_db / 20))
        mel = melspectrogram(wav)
        return np.ascontiguousarray(np.moveaxis(mel[:, frames - q], 0, 1))

    def ppg_context(
        self, i: int, radius: int, posteriors: LivePosteriors, gain_db: float = 0.0
    ) -> np.ndarray:
        """Frame `i`'s phone-posterior windows `(2r+1, 14, 16)`, aligned as `mel_context`
        (equal to the offline `frame_ppg_windows` with the same cepstral mean)."""
        frames = context_mel_frames(i, radius)
        upto = -(-int(frames.max()) * HOP // FRAME_HOP)
        posteriors.update(self, upto, float(10 ** (gain_db / 20)))
        track = at_mel_frames(posteriors.shares, frames.reshape(-1), posteriors.first)
        return np.ascontiguousarray(np.moveaxis(track.reshape(-1, *frames.shape), 0, 1))

    def context(
        self, i: int, radius: int, fields: tuple[str, ...],
        posteriors: LivePosteriors | None = None, gain_db: float = 0.0,
    ) -> np.ndarray:  # fmt: skip
        """Frame `i`'s model input `(2r+1, rows, 16)`: the windows of each of `fields`
        (`mel`, `ppg`) joined along the rows, as `speech2lip.data.batches.join_audio`."""
        parts = [self.mel_context(i, radius, gain_db) if f == "mel"
                 else self.ppg_context(i, radius, posteriors, gain_db) for f in fields]  # fmt: skip
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


class FrameScheduler:
    """Which frame to render next and when each leaves: frame i leaves at
    `t0 + i / fps + delay`; one that would leave more than `tolerance` late is dropped."""

    def __init__(self, radius: int, delay: float, fps: int = FPS,
                 tolerance: float | None = None, ppg: bool = False) -> None:  # fmt: skip
        self.radius, self.delay, self.fps, self.ppg = radius, delay, fps, ppg
        self.tolerance = 1.0 / fps if tolerance is None else tolerance
        self.next = 0  # the next frame not yet taken
        self.t0: float | None = None
        self.cost = 0.0  # running estimate of one frame's render time (s)
        self.rendered = self.dropped = 0
        self.latencies: list[float] = []

    def due(self, i: int) -> float:
        return self.t0 + i / self.fps + self.delay

    def ready(self, received: int) -> bool:
        return samples_needed(self.next, self.radius, self.ppg) <= received

    def take(self, received: int, now: float, t0: float) -> tuple[int, list[int]]:
        """(the frame to render now or -1, the frames dropped on the way): frames whose audio
        has all arrived, skipping those that could not leave on time any more."""
        self.t0 = t0  # the stream's, which moves when the input stalls
        dropped = []
        while self.ready(received):
            i = self.next
            self.next += 1
            if now + min(self.cost, 1.0 / self.fps) > self.due(i) + self.tolerance:
                self.dropped += 1
                dropped.append(i)
                continue
            return i, dropped
        return -1, dropped

    def rendered_in(self, seconds: float) -> None:
        """Update the render-time estimate (an exponential average). `take` counts at most one
        frame period of it, so one slow frame cannot make it skip every frame after."""
        self.cost += 0.2 * (seconds - self.cost)

    def on_time(self, i: int, now: float) -> bool:
        """Whether frame `i`, rendered by `now`, can still leave; counts it dropped if not."""
        if now > self.due(i) + self.tolerance:
            self.dropped += 1
            return False
        return True

    def sent(self, i: int, now: float, arrival: float) -> None:
        """Frame `i` left at `now`; its audio was complete at `arrival`."""
        self.rendered += 1
        self.latencies.append(now - arrival)

    def figures(self) -> dict:
        lat = np.asarray(self.latencies) * 1000
        return {"frames_rendered": self.rendered, "frames_dropped": self.dropped,
                "latency_ms_mean": float(lat.mean()) if len(lat) else None,
                "latency_ms_median": float(np.median(lat)) if len(lat) else None,
                "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else None}  # fmt: skip


class VoiceTracker:
    """Speech probability per frame from silero-vad run on the stream as it comes (512-sample
    chunks, one model state per session), and from it the rest weight of each frame and the
    speech level (for level matching).

    The rest weight is causal: a frame rests once the `min_frames` frames up to it are silent
    (speech widened by HANGOVER frames, which the look-ahead covers), then moves 1/`ramp` per
    frame towards rest, and back the same way when speech comes."""

    def __init__(self, vad, min_frames: int, ramp: int) -> None:
        self.vad, self.min_frames, self.step = vad, min_frames, 1.0 / max(1, ramp)
        self.chunk_prob: dict[int, float] = {}
        self.next_chunk = 0
        self.quiet = 0
        self.weight = 0.0
        self.level_power: float | None = None  # running mean power of speech frames
        if vad is not None:
            vad.reset_states()

    def feed(self, stream: AudioStream) -> None:
        """Run the VAD on every whole chunk that has arrived."""
        import torch

        while (self.next_chunk + 1) * CHUNK <= stream.received:
            k = self.next_chunk
            x = stream.samples(k * CHUNK, (k + 1) * CHUNK)
            with torch.no_grad():
                p = 1.0 if self.vad is None else float(self.vad(torch.from_numpy(x), SAMPLE_RATE))
            self.chunk_prob[k] = p
            self.chunk_prob.pop(k - 256, None)  # keep eight seconds
            self.next_chunk += 1

    def prob(self, i: int) -> float:
        """Frame `i`'s speech probability: the largest of the chunks overlapping it."""
        first = i * SAMPLES_PER_FRAME // CHUNK
        last = ((i + 1) * SAMPLES_PER_FRAME - 1) // CHUNK
        return max(self.chunk_prob.get(k, 0.0) for k in range(first, last + 1))

    def advance(self, i: int, stream: AudioStream) -> float:
        """Frame `i`'s rest weight (call once per frame, in order)."""
        speech = max(self.prob(j) for j in range(max(0, i - HANGOVER), i + HANGOVER + 1))
        if self.prob(i) >= THRESHOLD:
            frame = stream.samples(i * SAMPLES_PER_FRAME, (i + 1) * SAMPLES_PER_FRAME)
            power = float(np.mean(np.square(frame, dtype=np.float64)))
            old = self.level_power
            self.level_power = power if old is None else old + 0.02 * (power - old)  # ~2 s
        self.quiet = 0 if speech >= THRESHOLD else self.quiet + 1
        target = 1.0 if self.quiet >= self.min_frames else 0.0
        self.weight = float(np.clip(self.weight + np.sign(target - self.weight) * self.step, 0, 1))
        return self.weight

    def level_db(self) -> float | None:
        """The running speech level (dBFS), None before any speech."""
        if self.level_power is None:
            return None
        return float(10 * np.log10(max(self.level_power, 1e-12)))
