"""Training: the assembled model (`model`) and the resumable loop (`loop`)."""
