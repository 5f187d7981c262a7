"""speech2lip: personalised lip-sync video (a re-implementation of Speech2Lip, ICCV 2023)."""

__version__ = "0.1.0"
