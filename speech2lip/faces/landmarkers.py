"""Face landmark backends behind one interface."""

from __future__ import annotations

import numpy as np


def largest(faces: list[np.ndarray]) -> np.ndarray:
    """The face whose points span the largest area, from `(P, 2|3)` arrays."""
    return faces[int(np.argmax([np.ptp(f[:, 0]) * np.ptp(f[:, 1]) for f in faces]))]
