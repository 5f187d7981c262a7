"""Lip shape: a few numbers per frame that say how the mouth is shaped, whatever the head does.

The lip landmarks of a frame are aligned to a reference frame's by the similarity transform
(rotation, uniform scale, shift) that best maps the frame's `stable` points (eye corners, nose:
speech does not move them) onto the reference's, so head motion drops out. A principal
component basis of the aligned lip points over the train frames then gives `k` coefficients,
each in units of its standard deviation over those frames; the first is mostly the opening.

The lip model is conditioned on these codes (the ground truth's in training, predicted from the
audio when rendering): a low-dimensional target that audio predicts in seconds, and a lip image
that follows it instead of regressing to a half-shut mean mouth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speech2lip.errors import Speech2LipError
from speech2lip.geometry.topology import topology


def align(points: np.ndarray, reference: np.ndarray, stable: tuple[int, ...]) -> np.ndarray:
    """`points` `(N, P, 2)` mapped by the per-frame similarity transform that best (least
    squares) carries their `stable` points onto `reference`'s `(P, 2)`; returns `(N, P, 2)`."""
    pts = np.asarray(points, np.float64)[..., :2]
    ref = np.asarray(reference, np.float64)[..., :2]
    idx = list(stable)
    a, b = pts[:, idx], ref[idx]
    ma, mb = a.mean(axis=1, keepdims=True), b.mean(axis=0)
    a0, b0 = a - ma, b - mb
    u, s, vt = np.linalg.svd(np.einsum("npi,pj->nij", a0, b0))
    flip = np.linalg.det(u @ vt) < 0  # a reflection: take the best proper rotation instead
    u[flip, :, -1] *= -1
    s[flip, -1] *= -1
    rot = u @ vt
    scale = s.sum(axis=1) / np.maximum((a0**2).sum(axis=(1, 2)), 1e-12)
    return np.einsum("npi,nij->npj", pts - ma, rot) * scale[:, None, None] + mb


@dataclass(frozen=True)
class LipShapeBasis:
    """Aligned lip points -> `k` whitened principal coefficients, and back.

    `reference` `(P, 2)`: the frame the others are aligned to (the canonical frame's
    landmarks); `mean` `(2L,)`, `components` `(k, 2L)`, `scale` `(k,)`: the train frames'
    mean aligned lip points, principal directions and standard deviations along them."""

    reference: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray

    @classmethod
    def of_subject(
        cls, points: np.ndarray, canonical_index: int, train_ids, k: int
    ) -> LipShapeBasis:
        """The basis training conditions the lips on: fitted on the train frames' landmarks
        (`points` `(N, P, 2)`, every frame) aligned to the canonical frame's. Rendering
        fits it again from the same landmarks, so both must come from here."""
        return cls.fit(points[np.asarray(train_ids)], points[int(canonical_index)], k)

    @classmethod
    def fit(cls, points: np.ndarray, reference: np.ndarray, k: int) -> LipShapeBasis:
        """The basis of the landmarks `points` `(N, P, 2)` (the train frames)."""
        layout = topology(points)
        if len(points) < 2 * k:
            raise Speech2LipError(
                f"lip shape: {len(points)} frames are too few for {k} components; lower "
                f"train.model.shape_dim or use a longer clip"
            )
        lips = align(points, reference, layout.stable)[:, list(layout.lips)]
        lips = lips.reshape(len(points), -1)
        mean = lips.mean(axis=0)
        _, s, vt = np.linalg.svd(lips - mean, full_matrices=False)
        scale = np.maximum(s[:k] / np.sqrt(len(points)), 1e-6)
        return cls(np.asarray(reference, np.float64)[:, :2], mean, vt[:k], scale)

    def encode(self, points: np.ndarray) -> np.ndarray:
        """Landmarks `(N, P, 2)` -> codes `(N, k)` (float32)."""
        layout = topology(points)
        lips = align(points, self.reference, layout.stable)[:, list(layout.lips)]
        codes = (lips.reshape(len(points), -1) - self.mean) @ self.components.T / self.scale
        return codes.astype(np.float32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes `(N, k)` -> aligned lip points `(N, L, 2)` in the reference frame's pixels."""
        flat = (np.asarray(codes, np.float64) * self.scale) @ self.components + self.mean
        return flat.reshape(len(flat), -1, 2)

    def opening(self, codes: np.ndarray) -> np.ndarray:
        """The inner-lip opening `(N,)` (reference-frame pixels) of codes `(N, k)`."""
        layout = topology(self.reference[None])
        lips = list(layout.lips)
        a, b = (lips.index(i) for i in layout.inner_lips)
        points = self.decode(codes)
        return np.linalg.norm(points[:, a] - points[:, b], axis=-1)

    def closed(self, codes: np.ndarray, share: float = 0.1) -> np.ndarray:
        """The mean code `(k,)` of the least open `share` of codes `(N, k)`: the subject's
        closed mouth, as open as its `share` quantile or less."""
        opening = self.opening(codes)
        return np.asarray(codes)[opening <= np.quantile(opening, share)].mean(axis=0)

    def arrays(self) -> dict[str, np.ndarray]:
        """The basis as named arrays; `LipShapeBasis(**arrays)` rebuilds it."""
        return {"reference": self.reference, "mean": self.mean,
                "components": self.components, "scale": self.scale}  # fmt: skip
