"""Phonetic audio features: what is said, not who says it, aligned like the mel windows.

pocketsphinx's wheel ships the CMU en-US acoustic model and a phone language model (nothing is
downloaded). Its allphone search decodes 16 kHz audio into time-stamped phones (10 ms frames)
without a dictionary, so it works on any voice, and on other languages as far as their sounds
resemble English ones. The phones are grouped into `CLASSES`, classes of sounds that look alike
on the lips (visemes: p/b/m close the lips, f/v touch the lower lip, o/u round them, ...), so a
minute of one voice has enough examples of each.

Per mel frame (80 per second, the same frames as `speech2lip.data.audio.melspectrogram`), the
fraction of the frame each class covers: `(len(CLASSES), n_mel)`. Video frame i then takes the
16 mel frames that start at `mel_start(i)`, exactly the frames its mel window spans, so the two
features share their window and their offset conventions: `(n_frames, len(CLASSES), 16)`, each
column summing to 1 (audio past the end is silence).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from speech2lip.data.audio import HOP, MEL_FPS, MEL_WINDOW, SAMPLE_RATE, mel_start
from speech2lip.errors import Speech2LipError

log = logging.getLogger(__name__)

REINSTALL = "reinstall it: pip install --force-reinstall pocketsphinx==5.1.1"
PHONE_RATE = 100  # pocketsphinx frames per second
SILENT_RMS = 1e-4  # -80 dBFS: digital silence
UTTERANCE_S = 10.0  # seconds decoded at a time (typical of speech recognisers' utterances)

# Classes of phones that look alike on the lips; the first is silence (and every filler or
# noise the decoder reports, e.g. +NSN+, +SPN+).
CLASSES: dict[str, tuple[str, ...]] = {
    "sil": ("SIL",),
    "lips_closed": ("P", "B", "M"),
    "lip_teeth": ("F", "V"),
    "tongue_teeth": ("TH", "DH"),
    "alveolar": ("T", "D", "N", "L"),
    "sibilant": ("S", "Z"),
    "postalveolar": ("SH", "ZH", "CH", "JH"),
    "back": ("K", "G", "NG", "HH"),
    "open": ("AA", "AH", "AY", "AW"),
    "mid_spread": ("AE", "EH", "EY"),
    "close_spread": ("IH", "IY", "Y"),
    "open_round": ("AO", "OW", "OY"),
    "close_round": ("UH", "UW", "W"),
    "r_colour": ("ER", "R"),
}
CLASS_OF: dict[str, int] = {p: c for c, phones in enumerate(CLASSES.values()) for p in phones}
N_CLASSES = len(CLASSES)


def load_decoder():
    """A new pocketsphinx allphone decoder with the wheel's en-US model (0.1 s; a new one per
    audio file, as its cepstral normalisation carries over from one utterance to the next);
    one clear line when the package is missing or its bundled model files are (a broken
    install)."""
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as exc:
        raise Speech2LipError(f"phone features need the pocketsphinx package ({exc}); "
                              f"{REINSTALL}") from None  # fmt: skip
    root = os.path.join(get_model_path(), "en-us")
    hmm, phone_lm = os.path.join(root, "en-us"), os.path.join(root, "en-us-phone.lm.bin")
    for path in (hmm, phone_lm):
        if not os.path.exists(path):
            raise Speech2LipError(f"pocketsphinx's bundled model {path} is missing; {REINSTALL}")
    try:  # the phone-loop settings CMU recommends for allphone decoding
        return Decoder(hmm=hmm, allphone=phone_lm, lw=2.0, pip=0.3, beam=1e-10, pbeam=1e-10,
                       loglevel="ERROR")  # fmt: skip
    except Exception as exc:
        raise Speech2LipError(f"pocketsphinx's bundled model could not be loaded ({exc}); "
                              f"{REINSTALL}") from None  # fmt: skip


def utterances(wav: np.ndarray, seconds: float = UTTERANCE_S) -> list[int]:
    """Where to cut `wav` into utterances of about `seconds`: 10 ms frame indices, each the
    quietest frame within half a second of its nominal place, first 0 and last the end."""
    hop = SAMPLE_RATE // PHONE_RATE
    n = len(wav) // hop
    energy = np.square(np.asarray(wav[: n * hop], np.float64)).reshape(n, hop).sum(axis=1)
    step, slack = int(seconds * PHONE_RATE), PHONE_RATE // 2
    cuts = [0]
    while n - cuts[-1] > step + slack:
        lo, hi = cuts[-1] + step - slack, cuts[-1] + step + slack
        cuts.append(lo + int(np.argmin(energy[lo:hi])))
    return cuts + [-(-len(wav) // hop)]


def decode(wav: np.ndarray, source: str = "audio") -> list[tuple[str, int, int]]:
    """Phones of 16 kHz mono `wav` (float, -1..1): `(phone, first, last)` with the first and
    last 10 ms frame (inclusive). Decoded in utterances of about `UTTERANCE_S` cut at quiet
    frames: over one long utterance the phone loop can stick in one phone for seconds (obama's
    34 s, 4 semitones lower, came out 68 % AO/OW/OY, and the predicted mouth barely moved).
    An utterance of digital silence (below -80 dBFS) is silence without decoding. `source`
    names the audio in the error when decoding fails."""
    pcm = (np.clip(np.asarray(wav, np.float64), -1, 1) * 32767).astype("<i2")
    hop = SAMPLE_RATE // PHONE_RATE
    decoder = load_decoder()
    found = []
    try:
        cuts = utterances(wav)
        for first, stop in zip(cuts[:-1], cuts[1:], strict=True):
            chunk = pcm[first * hop : stop * hop].astype(np.float64) / 32767
            if not len(chunk) or np.sqrt(np.mean(chunk**2)) < SILENT_RMS:
                continue
            decoder.start_utt()
            decoder.process_raw(pcm[first * hop : stop * hop].tobytes(), full_utt=True)
            decoder.end_utt()
            found += [(s.word, first + int(s.start_frame), first + int(s.end_frame))
                      for s in decoder.seg()]  # fmt: skip
    except Exception as exc:  # pocketsphinx raises RuntimeError on data it cannot take
        raise Speech2LipError(
            f"{source}: pocketsphinx could not decode its audio ({exc})"
        ) from None
    return found


def class_track(segments: list[tuple[str, int, int]], n_mel: int) -> np.ndarray:
    """Per mel frame (centred at m * 12.5 ms, as the STFT frames), the fraction of the 12.5 ms
    around it that each phone class covers: `(N_CLASSES, n_mel) float32`; time no segment
    covers is silence."""
    n10 = max([last + 1 for _, _, last in segments], default=0)
    n10 = max(n10, int(np.ceil((n_mel + 1) * PHONE_RATE / MEL_FPS)) + 1)
    onehot = np.zeros((n10, N_CLASSES))
    onehot[:, 0] = 1.0
    for phone, first, last in segments:
        onehot[first : last + 1] = 0.0
        onehot[first : last + 1, CLASS_OF.get(phone, 0)] = 1.0
    # the integral of the piecewise-constant track, sampled at the 10 ms frame edges
    cum = np.vstack([np.zeros((1, N_CLASSES)), np.cumsum(onehot, axis=0)])
    edges = np.arange(n10 + 1) / PHONE_RATE
    centre = np.arange(n_mel) * HOP / SAMPLE_RATE
    lo = np.maximum(centre - 0.5 / MEL_FPS, 0.0)
    hi = centre + 0.5 / MEL_FPS
    area = np.stack([np.interp(hi, edges, cum[:, c]) - np.interp(lo, edges, cum[:, c])
                     for c in range(N_CLASSES)])  # fmt: skip
    return (area / ((hi - lo) * PHONE_RATE)).astype(np.float32)


def frame_phone_windows(wav: np.ndarray, n_frames: int, source: str = "audio") -> np.ndarray:
    """Per video frame i, the phone classes of the 16 mel frames its mel window spans:
    `(n_frames, N_CLASSES, 16) float32` in 0..1 (`frame_mel_windows`' alignment)."""
    segments = decode(wav, source)
    n_mel = int(mel_start(n_frames)) + MEL_WINDOW
    track = class_track(segments, n_mel)
    idx = mel_start(np.arange(n_frames))[:, None] + np.arange(MEL_WINDOW)[None]
    return np.ascontiguousarray(np.moveaxis(track[:, idx], 0, 1))
