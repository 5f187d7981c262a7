"""`python -m speech2lip live MODEL`: speak into a browser and watch the subject say it.

Not a pipeline stage: an application on the library floor's renderer, with its own timing
(`stream`), a one-frame-at-a-time renderer (`engine`) and a WebRTC server (`server`).
"""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path

from speech2lip.errors import Speech2LipError

log = logging.getLogger(__name__)


def open_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`, or one clear line when it cannot be had (taken
    first, so a busy port fails before the model loads)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Speech2LipError(f"port {port} on {host} is in use (another live server?); "
                                  "pick a free one with --port") from None  # fmt: skip
        raise Speech2LipError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(16)
    return sock


def check_options(port: int, size: int | None, frames: int, budget_ms: float) -> None:
    """One clear line for an option out of range."""
    if not 0 <= port <= 65535:
        raise Speech2LipError(f"--port {port}: a port is 0..65535 (0: any free port)")
    if size is not None and size < 16:
        raise Speech2LipError(f"--size {size}: at least 16 pixels")
    if frames < 1:
        raise Speech2LipError(f"--frames {frames}: at least one background frame")
    if not 0 <= budget_ms <= 5000:
        raise Speech2LipError(f"--budget-ms {budget_ms}: 0..5000 ms")


def run(model: str | Path, host: str = "127.0.0.1", port: int = 8080, size: int | None = 512,
        audio: str | Path | None = None, start_frame: int = 0, frames: int = 250,
        silence: bool = True, match_level: bool = True, budget_ms: float = 100.0,
        threads: int = 1) -> None:  # fmt: skip
    """Serve live mode until interrupted; each session's figures are logged when it ends."""
    import torch
    from aiohttp import web

    from speech2lip.live.engine import LiveEngine
    from speech2lip.live.server import build_app

    check_options(port, size, frames, budget_ms)
    torch.set_num_threads(max(1, threads))
    sock = open_socket(host, port)
    try:
        wav = None
        if audio is not None:
            from speech2lip.renderer import load_driving_audio

            wav = load_driving_audio(audio)
        engine = LiveEngine(model, size=size, start_frame=start_frame, frames=frames,
                            silence=silence)  # fmt: skip
        app = build_app(engine, wav, budget_ms / 1000, match_level)
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    log.info("live: open http://%s:%d/ in a browser (Ctrl-C stops)%s", shown,
             sock.getsockname()[1], f"; playing {audio}" if audio else "")  # fmt: skip
    for chatty in ("aioice", "aiohttp.access"):  # a line per ICE check and per request
        logging.getLogger(chatty).setLevel(logging.WARNING)
    web.run_app(app, sock=sock, print=None, handle_signals=True)
