"""Phone posteriors: how likely each class of phones is in every 10 ms of audio, from the
acoustic model pocketsphinx's wheel ships, scored here frame by frame without its decoder.

The model (`pocketsphinx/model/en-us/en-us`) was trained on many English speakers: per
context-independent phone, a codebook of 128 Gaussians in each of three streams (13 cepstra,
their deltas, their second deltas) and per HMM state the mixture weights over it. Each 10 ms
frame's cepstra are computed as the model's `feat.params` says (a 25.6 ms Hamming window,
25 mel filters from 130 to 6800 Hz, DCT, lifter 22, the file's mean subtracted); each phone's
likelihood is the sum over its three states' mixtures, and a softmax over the phones (scaled by
`ACOUSTIC_SCALE`, as frame scores of a model that treats its streams as independent are
over-confident) gives posteriors, summed into the lip classes of `speech2lip.data.phones`.

Unlike decoding (`speech2lip.data.phones.decode`), nothing is decided: a frame between an
/a/ and an /m/ is partly both, a voice the model finds unusual spreads its share instead of
picking a wrong phone, and every frame depends only on the audio around it (and the file's
mean cepstrum), so it runs on any length of audio at about 15x real time on one core. Aligned
like the mel windows: `frame_ppg_windows` gives `(n_frames, N_CLASSES, 16)`, each column
summing to 1.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass

import numpy as np

from speech2lip.data.audio import HOP, MEL_WINDOW, SAMPLE_RATE, mel_start
from speech2lip.data.phones import CLASS_OF, N_CLASSES, REINSTALL, SILENT_RMS
from speech2lip.errors import Speech2LipError

RATE = 100  # frames per second
FRAME_HOP = SAMPLE_RATE // RATE
WINDOW = 410  # samples: 25.625 ms, the model's front end
N_FFT = 512
PRE_EMPHASIS = 0.97
N_CEPSTRA = 13
# What this front end computes; the model's feat.params must say the same.
FRONT_END = {"-lowerf": "130", "-upperf": "6800", "-nfilt": "25", "-transform": "dct",
             "-lifter": "22", "-feat": "1s_c_d_dd", "-svspec": "0-12/13-25/26-38"}  # fmt: skip
ACOUSTIC_SCALE = 0.5  # measured: 0.25-1 within 0.01 of cross-validated opening r; 0.5 best
LOG_BASE = 1.0001  # the mixture weights' quantised log base, and their shift (10 bits)
WEIGHT_SHIFT = 10
VARIANCE_FLOOR = 1e-4  # pocketsphinx's default (-varfloor); without it 47 % of frames agree
CHUNK = 256  # frames scored at a time (memory: 256 x 42 x 3 x 128 floats)
PRIOR_FRAMES = 500  # 10 ms frames a prior cepstral mean counts as (`cepstral_mean`)


@dataclass(frozen=True)
class AcousticModel:
    """The model's context-independent phones and, per phone and stream, its Gaussians
    (`means`, `precisions` `(P, 3, G, 13)`, `log_norm` `(P, 3, G)`) and per phone, state and
    stream the mixture weights over them (`weights` `(P, 3, 3, G)`)."""

    phones: tuple[str, ...]
    means: np.ndarray
    precisions: np.ndarray
    log_norm: np.ndarray
    weights: np.ndarray

    @functools.cached_property
    def classes(self) -> np.ndarray:
        """`(P, N_CLASSES)` 0/1: each phone's lip class (fillers and noise are silence)."""
        out = np.zeros((len(self.phones), N_CLASSES), np.float32)
        out[np.arange(len(self.phones)), [CLASS_OF.get(p, 0) for p in self.phones]] = 1.0
        return out

    @functools.cached_property
    def scoring(self) -> tuple[list, list, list, list, np.ndarray]:
        """What `phone_scores` multiplies each frame by, computed once (live mode scores a
        few frames at a time): per stream the precisions `(P*G, 13)`, means times precisions
        `(P*G, 13)`, m'Pm `(P*G,)` and log normalisers `(P*G,)`; the weights as float32."""
        d = self.means.shape[-1]
        streams = range(self.means.shape[1])
        prec = [self.precisions[:, k].reshape(-1, d) for k in streams]
        mp = [(self.means[:, k] * self.precisions[:, k]).reshape(-1, d) for k in streams]
        quad = [(self.means[:, k] ** 2 * self.precisions[:, k]).sum(axis=-1).reshape(-1)
                for k in streams]  # fmt: skip
        norm = [self.log_norm[:, k].reshape(-1) for k in streams]
        return prec, mp, quad, norm, self.weights.astype(np.float32)


def model_dir() -> str:
    """Where pocketsphinx's wheel keeps its en-US acoustic model; one line naming the package
    to reinstall when it is not installed."""
    try:
        from pocketsphinx import get_model_path
    except ImportError as exc:
        raise Speech2LipError(f"phone posteriors need the pocketsphinx package ({exc}); "
                              f"{REINSTALL}") from None  # fmt: skip
    return os.path.join(get_model_path(), "en-us", "en-us")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise Speech2LipError(f"pocketsphinx's bundled model file {path} could not be read "
                              f"({exc.strerror}); {REINSTALL}") from None  # fmt: skip


def read_gaussians(path: str) -> np.ndarray:
    """A Sphinx-3 binary parameter file (`means`, `variances`): `(P, streams, G, 13)`."""
    raw = _read(path)
    start = raw.find(b"endhdr\n") + len(b"endhdr\n")
    if start < len(b"endhdr\n") or raw[start : start + 4] != struct.pack("<I", 0x11223344):
        raise Speech2LipError(f"{path}: not a Sphinx-3 parameter file; {REINSTALL}")
    n_phone, n_stream, n_gauss = struct.unpack_from("<3i", raw, start + 4)
    lengths = struct.unpack_from(f"<{n_stream}i", raw, start + 16)
    (total,) = struct.unpack_from("<i", raw, start + 16 + 4 * n_stream)
    if set(lengths) != {N_CEPSTRA} or total != n_phone * n_gauss * sum(lengths):
        raise Speech2LipError(f"{path}: unexpected layout {lengths}; {REINSTALL}")
    data = np.frombuffer(raw, "<f4", total, start + 20 + 4 * n_stream)
    return data.reshape(n_phone, n_stream, n_gauss, N_CEPSTRA).astype(np.float64)


def read_weights(path: str, n_phone: int) -> np.ndarray:
    """The context-independent states' mixture weights from `sendump` (bytes holding
    -log weight in units of `LOG_BASE`, shifted right by `WEIGHT_SHIFT` bits):
    `(n_phone, 3 states, streams, G)`, linear."""
    raw = _read(path)
    offset = 0
    while True:  # length-prefixed header strings, ended by a zero length
        (length,) = struct.unpack_from("<i", raw, offset)
        offset += 4 + length
        if length == 0:
            break
    n_gauss, n_senone = struct.unpack_from("<2i", raw, offset)
    n_stream = (len(raw) - offset - 8) // (n_gauss * n_senone)
    if n_senone < 3 * n_phone or n_stream * n_gauss * n_senone != len(raw) - offset - 8:
        raise Speech2LipError(f"{path}: unexpected mixture-weight layout; {REINSTALL}")
    q = np.frombuffer(raw, np.uint8, n_stream * n_gauss * n_senone, offset + 8)
    q = q.reshape(n_stream, n_gauss, n_senone)[:, :, : 3 * n_phone].astype(np.float64)
    weights = np.exp(-q * (1 << WEIGHT_SHIFT) * np.log(LOG_BASE))
    # context-independent senones come first, three per phone in phone order
    return weights.reshape(n_stream, n_gauss, n_phone, 3).transpose(2, 3, 0, 1)


def read_phone_names(path: str) -> tuple[str, ...]:
    """The context-independent phones of a binary model definition (`mdef`)."""
    raw = _read(path)
    marker = b"END FILE FORMAT DESCRIPTION\n\x00"
    at = raw.find(marker)
    if not raw.startswith(b"BMDF") or at < 0:
        raise Speech2LipError(f"{path}: not a binary model definition; {REINSTALL}")
    at += len(marker)
    n_ci, _, n_states, n_ci_senones = struct.unpack_from("<4i", raw, at)
    if n_states != 3 or n_ci_senones != 3 * n_ci:
        raise Speech2LipError(f"{path}: not a 3-state model; {REINSTALL}")
    names = raw[at + 40 :].split(b"\x00", n_ci)[:n_ci]
    return tuple(n.decode("ascii") for n in names)


def check_front_end(path: str) -> None:
    """The model's `feat.params` must describe the front end this module computes."""
    words = _read(path).decode("ascii", "replace").split()
    params = dict(zip(words[::2], words[1::2], strict=False))
    wrong = {k: params.get(k) for k, v in FRONT_END.items() if params.get(k) != v}
    if wrong:
        raise Speech2LipError(f"{path}: the model's front end differs from the one speech2lip "
                              f"computes ({wrong}); {REINSTALL}")  # fmt: skip


def _parse(reader, path: str, *args):
    """`reader(path, *args)`, a damaged (truncated) file named in one line."""
    try:
        return reader(path, *args)
    except (struct.error, ValueError, IndexError) as exc:
        raise Speech2LipError(f"pocketsphinx's bundled model file {path} is damaged ({exc}); "
                              f"{REINSTALL}") from None  # fmt: skip


@functools.lru_cache(maxsize=1)
def load_model() -> AcousticModel:
    """pocketsphinx's en-US model, read once per process (0.05 s)."""
    root = model_dir()
    check_front_end(os.path.join(root, "feat.params"))
    phones = _parse(read_phone_names, os.path.join(root, "mdef"))
    means = _parse(read_gaussians, os.path.join(root, "means"))
    variances = _parse(read_gaussians, os.path.join(root, "variances"))
    if means.shape != variances.shape or means.shape[0] != len(phones):
        raise Speech2LipError(f"{root}: means, variances and phones disagree; {REINSTALL}")
    variances = np.maximum(variances, VARIANCE_FLOOR)
    weights = _parse(read_weights, os.path.join(root, "sendump"), len(phones))
    return AcousticModel(phones=phones, means=means, precisions=1.0 / variances,
                         log_norm=-0.5 * np.log(2 * np.pi * variances).sum(axis=-1),
                         weights=weights)  # fmt: skip


@functools.lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """`(25, N_FFT // 2 + 1)` triangular filters, equally spaced on the mel scale."""
    params = {k: float(v) for k, v in FRONT_END.items() if k in ("-lowerf", "-upperf", "-nfilt")}
    n = int(params["-nfilt"])
    mel = np.linspace(*(2595 * np.log10(1 + params[k] / 700) for k in ("-lowerf", "-upperf")),
                      n + 2)  # fmt: skip
    edges = 700 * (10 ** (mel / 2595) - 1)
    freqs = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT
    rising = (freqs[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - freqs[None]) / (edges[2:] - edges[1:-1])[:, None]
    filters = np.clip(np.minimum(rising, falling), 0.0, None)
    return filters / np.maximum(filters.sum(axis=1, keepdims=True), 1e-12)


def cepstra(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(T, 13)` cepstra of 16 kHz `wav`, frame t centred on sample t * 160, and `(T,)` True
    where the frame is digital silence (below -80 dBFS)."""
    x = np.asarray(wav, np.float64)
    x = np.concatenate([np.zeros(WINDOW // 2), x, np.zeros(WINDOW)])
    x[1:] -= PRE_EMPHASIS * x[:-1].copy()
    n = -(-len(wav) // FRAME_HOP)
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW)[::FRAME_HOP][:n]
    silent = np.sqrt(np.mean(frames**2, axis=1)) < SILENT_RMS
    power = np.abs(np.fft.rfft(frames * np.hamming(WINDOW), N_FFT)) ** 2
    log_mel = np.log(power @ mel_filters().T + 1e-12)
    from scipy.fft import dct

    cep = dct(log_mel, type=2, norm="ortho", axis=1)[:, :N_CEPSTRA]
    lifter = int(FRONT_END["-lifter"])
    return cep * (1 + lifter / 2 * np.sin(np.pi * np.arange(N_CEPSTRA) / lifter)), silent


def cepstral_mean(
    cep: np.ndarray, silent: np.ndarray, prior: np.ndarray | None = None
) -> np.ndarray:
    """`(13,)`: the mean cepstrum over the sounding frames (all of them if none sounds); with
    `prior` (the subject's own speech's), that counted as `PRIOR_FRAMES` frames too, as live
    mode's running mean starts. A few seconds of speech give a poor mean on their own: the
    test split of macron (5 s) heard alone lost 5.5 % of LMD against its whole clip's
    features, 1.2 % with the prior."""
    if prior is not None:
        sounding = ~silent
        total = cep[sounding].sum(axis=0) + PRIOR_FRAMES * np.asarray(prior, np.float64)
        return total / (int(sounding.sum()) + PRIOR_FRAMES)
    sounding = ~silent if (~silent).any() else np.ones_like(silent)
    return cep[sounding].mean(axis=0) if len(cep) else np.zeros(N_CEPSTRA)


def streams(cep: np.ndarray, silent: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """`(T, 3, 13)`: cepstra less `mean` (None: their own over the sounding frames), deltas
    (t+2 minus t-2) and second deltas (the delta's t+1 minus t-1), edges repeated."""
    c = cep - (cepstral_mean(cep, silent) if mean is None else mean)
    pad = np.pad(c, ((3, 3), (0, 0)), mode="edge")
    t = len(c)

    def at(k: int) -> np.ndarray:
        return pad[3 + k : 3 + k + t]

    return np.stack([c, at(2) - at(-2), (at(3) - at(-1)) - (at(1) - at(-3))], axis=1)


def phone_scores(model: AcousticModel, feats: np.ndarray) -> np.ndarray:
    """`(T, P)` log-likelihood of each phone per frame (its states' mixtures, summed)."""
    p, s, g, _ = model.means.shape
    prec, mp, quad, norm, weights = model.scoring
    out = np.empty((len(feats), p))
    for lo in range(0, len(feats), CHUNK):
        x = feats[lo : lo + CHUNK]
        ll = np.empty((len(x), p, s, g))
        for k in range(s):  # -0.5 (x-m)' P (x-m) + log_norm, as two matrix products
            dist = x[:, k] ** 2 @ prec[k].T - 2 * x[:, k] @ mp[k].T + quad[k]
            ll[:, :, k] = (norm[k] - 0.5 * dist).reshape(len(x), p, g)
        top = ll.max(axis=-1)  # (T, P, S)
        mix = np.einsum("tpsg,pksg->tpks", np.exp(ll - top[..., None]).astype(np.float32),
                        weights, optimize=True)  # fmt: skip
        states = (np.log(np.maximum(mix, 1e-30)) + top[:, :, None]).sum(axis=-1)  # (T, P, 3)
        peak = states.max(axis=-1, keepdims=True)
        out[lo : lo + len(x)] = peak[..., 0] + np.log(np.exp(states - peak).sum(axis=-1))
    return out


def class_posteriors(
    wav: np.ndarray, mean: np.ndarray | None = None, prior: np.ndarray | None = None
) -> np.ndarray:
    """`(T, N_CLASSES) float32`: per 10 ms frame (centred on sample t * 160) the posterior
    share of each lip class; digital silence is silence. `mean`: the cepstral mean to take off
    (None: the audio's own, `cepstral_mean`, started from `prior` when given)."""
    cep, silent = cepstra(wav)
    if mean is None and prior is not None:
        mean = cepstral_mean(cep, silent, prior)
    return posteriors_of(cep, silent, mean)


def posteriors_of(cep: np.ndarray, silent: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """`class_posteriors` from cepstra and their silent frames (`cepstra`)."""
    model = load_model()
    if not len(cep):
        return np.zeros((0, N_CLASSES), np.float32)
    scores = ACOUSTIC_SCALE * phone_scores(model, streams(cep, silent, mean))
    post = np.exp(scores - scores.max(axis=1, keepdims=True))
    shares = (post / post.sum(axis=1, keepdims=True)).astype(np.float32) @ model.classes
    shares[silent] = np.eye(N_CLASSES, dtype=np.float32)[0]
    return shares


def at_mel_frames(shares: np.ndarray, mel_frames: np.ndarray, first: int = 0) -> np.ndarray:
    """`(N_CLASSES, len(mel_frames))`: the posteriors `shares` (10 ms frames from frame
    `first`) at the centres of `mel_frames` (80 per second), interpolated; silence past the
    last one."""
    times = (first + np.arange(len(shares))) / RATE
    centres = np.asarray(mel_frames) * HOP / SAMPLE_RATE
    if not len(shares):
        return np.eye(N_CLASSES, dtype=np.float32)[:, [0] * len(centres)]
    return np.stack([np.interp(centres, times, shares[:, c], right=float(c == 0))
                     for c in range(N_CLASSES)]).astype(np.float32)  # fmt: skip


def frame_ppg_windows(
    wav: np.ndarray, n_frames: int, mean: np.ndarray | None = None, prior: np.ndarray | None = None
) -> np.ndarray:
    """Per video frame i, the lip-class posteriors over the 16 mel frames its mel window spans
    (`frame_mel_windows`' alignment; each mel frame takes the posteriors at its centre,
    interpolated; past the audio's end, silence): `(n_frames, N_CLASSES, 16) float32`.
    `mean`, `prior`: as `class_posteriors`."""
    shares = class_posteriors(wav, mean, prior)
    track = at_mel_frames(shares, np.arange(mel_start(n_frames) + MEL_WINDOW))
    idx = mel_start(np.arange(n_frames))[:, None] + np.arange(MEL_WINDOW)[None]
    return np.ascontiguousarray(np.moveaxis(track[:, idx], 0, 1))
