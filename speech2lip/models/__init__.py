"""Models: audio encoder, implicit lip model, learned canonical depth, Blend-Net, sync expert,
losses. `nn.Module`s with no I/O and no device code (see `speech2lip.train` for the loop)."""

from speech2lip.models.audio import AudioEncoder, AudioSmoother
from speech2lip.models.blend import BlendNet, black_holes
from speech2lip.models.depth import CanonicalDepth
from speech2lip.models.lips import ImplicitLips, PositionalEncoding, render_lattice, render_points
from speech2lip.models.syncnet import SyncNetColor, load_sync_expert

__all__ = [
    "AudioEncoder", "AudioSmoother", "BlendNet", "CanonicalDepth", "ImplicitLips",
    "PositionalEncoding", "SyncNetColor", "black_holes", "load_sync_expert", "render_lattice",
    "render_points",
]  # fmt: skip
