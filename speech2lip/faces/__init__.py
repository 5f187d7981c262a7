"""Faces in frames: detection boxes, landmark backends (MediaPipe, face_alignment's FAN)."""
