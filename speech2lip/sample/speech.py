"""Speech and phoneme timings from espeak-ng, and the mouth controls they imply.

espeak-ng's C library is driven through ctypes in synchronous mode: one synthesis call gives the
audio samples and a PHONEME event (mnemonic + sample position) for every phoneme, so timings and
audio come from the same run and cannot drift apart.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import logging
import multiprocessing
from dataclasses import dataclass
from importlib import resources

import numpy as np

from speech2lip.errors import Speech2LipError

log = logging.getLogger(__name__)

_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Speech:
    """Synthesised speech: mono int16 `audio` at `sample_rate`, phonemes with start samples."""

    audio: np.ndarray  # (S,) int16
    sample_rate: int
    phonemes: list[tuple[int, str]]  # (start sample, espeak mnemonic), in time order


class Espeak:
    """A handle on libespeak-ng (one per process: the library keeps global state)."""

    _instance: Espeak | None = None

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError:
            raise Speech2LipError(
                "libespeak-ng not found: install espeak-ng (Debian/Ubuntu: `apt-get install "
                "espeak-ng`, or run scripts/setup.sh)"
            ) from None
        self.sample_rate = self.lib.espeak_Initialize(
            _OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise Speech2LipError("espeak-ng failed to initialise (is espeak-ng-data installed?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _Callback(self._on_synth)  # keep a reference: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_synth(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                self._events.append(
                    (int(events[i].sample), events[i].id.decode("ascii", "replace"))
                )
            i += 1
        return 0

    def synth(self, text: str, voice: str = "en-us", words_per_minute: int = 160) -> Speech:
        """Speak `text`; returns its audio and phoneme timings."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise Speech2LipError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`)")
        self.lib.espeak_SetParameter(_PARAM_RATE, int(words_per_minute), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Speech(audio.astype(np.int16), self.sample_rate, list(self._events))


def load_sentences() -> list[str]:
    """The demo's English sentences (package data, one per line)."""
    text = resources.files("speech2lip.sample").joinpath("sentences.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _speak_sentences(
    sentences: list[str], pauses: list[float], duration: float, voice: str, wpm: int
) -> Speech:
    """Speak `sentences` in turn, each followed by its pause (s), until `duration` s is reached."""
    engine = Espeak.get()
    sr = engine.sample_rate
    lead = np.zeros(int(0.3 * sr), np.int16)
    parts, phonemes, total = [lead], [(0, "_")], len(lead)
    for k in range(10_000):
        if total >= duration * sr:
            break
        speech = engine.synth(sentences[k % len(sentences)], voice, wpm)
        phonemes += [(total + s, p) for s, p in speech.phonemes]
        parts.append(speech.audio)
        total += len(speech.audio)
        pause = np.zeros(int(pauses[k % len(pauses)] * sr), np.int16)
        phonemes.append((total, "_"))
        parts.append(pause)
        total += len(pause)
    return Speech(np.concatenate(parts), sr, phonemes)


def speak_script(
    duration: float, rng: np.random.Generator, voice: str, words_per_minute: int
) -> Speech:
    """About `duration` seconds of varied sentences (whole ones), with short random pauses.

    espeak-ng keeps synthesis state between calls (its pitch flutter runs on), so the same text
    sounds slightly different the second time in a process. For a result that depends only on
    the seed, synthesis runs in a freshly spawned process each time.
    """
    sentences = load_sentences()
    order = [sentences[i] for i in rng.permutation(len(sentences))]
    pauses = [float(p) for p in rng.uniform(0.25, 0.7, len(order))]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        job = pool.submit(_speak_sentences, order, pauses, duration, voice, words_per_minute)
        return job.result()


# Mouth controls per phoneme: (opening, spreading, rounding), each in [0, 1].
# espeak-ng's English mnemonics; diphthongs move between two shapes (see _DIPHTHONGS).
_VISEME: dict[str, tuple[float, float, float]] = {
    "_": (0.0, 0.0, 0.0),
    "p": (0.0, 0.0, 0.0), "b": (0.0, 0.0, 0.0), "m": (0.0, 0.0, 0.0),
    "f": (0.1, 0.1, 0.0), "v": (0.1, 0.1, 0.0),
    "T": (0.25, 0.1, 0.0), "D": (0.25, 0.1, 0.0),
    "t": (0.2, 0.2, 0.0), "d": (0.2, 0.2, 0.0), "n": (0.2, 0.2, 0.0), "l": (0.3, 0.1, 0.0),
    "s": (0.15, 0.3, 0.0), "z": (0.15, 0.3, 0.0),
    "k": (0.3, 0.0, 0.0), "g": (0.3, 0.0, 0.0), "N": (0.25, 0.0, 0.0), "h": (0.4, 0.0, 0.0),
    "S": (0.2, 0.0, 0.6), "Z": (0.2, 0.0, 0.6), "tS": (0.2, 0.0, 0.6), "dZ": (0.2, 0.0, 0.6),
    "r": (0.2, 0.0, 0.5), "w": (0.1, 0.0, 1.0), "j": (0.2, 0.5, 0.0),
    "a": (1.0, 0.2, 0.0), "a#": (0.9, 0.2, 0.0), "A:": (1.0, 0.1, 0.0), "A@": (0.9, 0.1, 0.0),
    "aa": (1.0, 0.2, 0.0), "0": (0.8, 0.0, 0.5), "O:": (0.75, 0.0, 0.7), "O@": (0.7, 0.0, 0.6),
    "V": (0.7, 0.1, 0.0), "E": (0.6, 0.5, 0.0), "e": (0.55, 0.5, 0.0), "e@": (0.6, 0.4, 0.0),
    "@": (0.4, 0.1, 0.0), "3:": (0.45, 0.1, 0.2), "3": (0.4, 0.1, 0.1), "@L": (0.4, 0.1, 0.0),
    "I": (0.35, 0.7, 0.0), "i": (0.3, 0.8, 0.0), "i:": (0.3, 0.9, 0.0), "I2": (0.35, 0.6, 0.0),
    "i@": (0.35, 0.7, 0.0), "U": (0.3, 0.0, 0.8), "u:": (0.25, 0.0, 1.0), "U@": (0.35, 0.0, 0.8),
    "o@": (0.6, 0.0, 0.8),
}  # fmt: skip
_DIPHTHONGS = {
    "aI": ("a", "I"), "aU": ("a", "U"), "eI": ("e", "I"), "oU": ("O@", "U"), "OI": ("O:", "I"),
    "aI@": ("a", "@"), "aU@": ("a", "@"),
}  # fmt: skip
BILABIALS = frozenset({"p", "b", "m"})


def viseme(mnemonic: str) -> tuple[float, float, float]:
    """Mouth controls of one espeak mnemonic (unknown ones fall back on their first letter)."""
    name = mnemonic.strip().rstrip(";,'")
    if name.startswith("_") or not name:
        return _VISEME["_"]
    if name in _VISEME:
        return _VISEME[name]
    if name[:2] in _VISEME:
        return _VISEME[name[:2]]
    return _VISEME.get(name[0], (0.3, 0.0, 0.0))


def mouth_controls(
    phonemes: list[tuple[int, str]],
    sample_rate: int,
    n_frames: int,
    fps: int = 25,
    coarticulation_s: float = 0.035,
) -> np.ndarray:
    """Per-frame mouth controls `(n_frames, 3) float32`: opening, spreading, rounding in [0, 1].

    Phoneme targets are laid out at 200 Hz, smoothed with a Gaussian (coarticulation), sampled at
    frame centres, and bilabials (p, b, m) are forced shut at their middle so lips really close.
    """
    rate = 200
    n = int(np.ceil(n_frames / fps * rate)) + 1
    targets = np.zeros((n, 3))
    closures: list[float] = []
    starts = [s / sample_rate for s, _ in phonemes] + [n / rate]
    for (_, name), t0, t1 in zip(phonemes, starts[:-1], starts[1:], strict=True):
        i0, i1 = int(round(t0 * rate)), max(int(round(t1 * rate)), int(round(t0 * rate)) + 1)
        if name in _DIPHTHONGS:
            a, b = _DIPHTHONGS[name]
            mid = (i0 + i1) // 2
            targets[i0:mid] = viseme(a)
            targets[mid:i1] = viseme(b)
        else:
            targets[i0:i1] = viseme(name)
        if name in BILABIALS:
            closures.append((t0 + t1) / 2)
    sigma = coarticulation_s * rate
    k = np.arange(-int(4 * sigma), int(4 * sigma) + 1)
    kernel = np.exp(-0.5 * (k / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(targets, ((len(k) // 2, len(k) // 2), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(3)], axis=1)
    times = (np.arange(n_frames) + 0.5) / fps
    frames = np.stack([np.interp(times, np.arange(n) / rate, smooth[:, c]) for c in range(3)], 1)
    for tc in closures:  # the frame nearest a bilabial's centre is shut; +-60 ms ease in/out
        w = np.clip((np.abs(times - tc) - 0.02) / 0.04, 0, 1)
        frames[:, 0] *= w * w * (3 - 2 * w)
    return np.clip(frames, 0, 1).astype(np.float32)
