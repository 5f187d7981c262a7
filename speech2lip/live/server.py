"""Live mode's server: one page over HTTP (aiohttp) and one WebRTC session (aiortc) at a time.

The browser sends its microphone (or, with `--audio FILE`, the server plays that file as if it
arrived) in 20 ms packets; a render thread turns the stream into frames as soon as each frame's
audio has come (`speech2lip.live.stream`); an outgoing video track sends each frame at its due
time and an outgoing audio track sends the same audio `delay` seconds after it arrived, so both
leave the server in step. A second client gets a "busy" page; a client that leaves (or whose
connection fails) frees the renderer at once.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time
from importlib import resources

import numpy as np

from speech2lip.live.engine import LiveEngine
from speech2lip.live.stream import (
    PACKET,
    AudioStream,
    FrameScheduler,
    LivePosteriors,
    VoiceTracker,
    lookahead,
    samples_needed,
)
from speech2lip.media import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
MOVED = 0.5  # mean grey levels: a mouth box that changed more than this moved
BUSY_PAGE = ("<!doctype html><title>speech2lip live: busy</title><p id=status>speech2lip live "
             "is busy: another client is connected. Try again when it has left.</p>")  # fmt: skip


def clock() -> float:
    return time.monotonic()


class Session:
    """One client: its audio stream, the render thread and the two outgoing tracks."""

    def __init__(self, engine: LiveEngine, budget: float, match_level: bool) -> None:
        from speech2lip.data.voice import load_vad

        self.engine, self.match_level = engine, match_level
        self.loop = asyncio.get_running_loop()
        self.stream = AudioStream()
        self.ppg = "ppg" in engine.fields
        self.delay = lookahead(engine.radius, self.ppg) + PACKET / SAMPLE_RATE + budget
        self.scheduler = FrameScheduler(engine.radius, self.delay, ppg=self.ppg)
        self.posteriors = LivePosteriors(engine.cepstral_mean) if self.ppg else None
        cfg = engine.cfg
        vad = load_vad() if (engine.rest is not None or match_level) else None
        self.voice = VoiceTracker(vad, cfg.silence_min_frames, cfg.silence_ramp)
        self.cond = threading.Condition()
        self.frames: asyncio.Queue = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = False
        self.on_failure = None  # called (on the event loop) when rendering fails
        self.video_sent: dict[int, float] = {}
        self.audio_sent: dict[int, float] = {}
        self.offsets: list[float] = []  # per frame: when it left minus when its audio left (s)
        self.late_sends = 0
        self.mouth_moved = 0  # frames whose mouth box changed from the one before
        self.opened = clock()
        self.thread = threading.Thread(target=self._work, name="live-render", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- audio in
    def push(self, samples: np.ndarray) -> None:
        with self.cond:
            self.stream.push(samples, clock())
            self.cond.notify()
        if not self.started.is_set():
            self.started.set()

    async def ingest(self, track) -> None:
        """Read the browser's audio track (48 kHz Opus, decoded) into the stream at 16 kHz."""
        import av
        from aiortc.mediastreams import MediaStreamError

        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        while not self.stopped:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                self.push(out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0)

    async def play(self, wav: np.ndarray) -> None:
        """Feed `wav` (16 kHz mono) into the stream in real time, 20 ms at a time, looping."""
        start, k, n = clock(), 0, len(wav)
        while not self.stopped:
            await asyncio.sleep(max(0.0, start + k * PACKET / SAMPLE_RATE - clock()))
            idx = (k * PACKET + np.arange(PACKET)) % n
            self.push(wav[idx])
            k += 1

    # ---------------------------------------------------------------- rendering
    def _gain(self) -> float:
        subject, heard = self.engine.voice.level_db, self.voice.level_db()
        if not self.match_level or subject is None or heard is None:
            return 0.0
        return float(np.clip(subject - heard, -30.0, 30.0))

    def _work(self) -> None:
        engine, radius = self.engine, self.engine.radius
        while True:
            with self.cond:
                while not self.stopped and not self.scheduler.ready(self.stream.received):
                    self.cond.wait(0.5)
                if self.stopped:
                    return
                self.voice.feed(self.stream)
                i, dropped = self.scheduler.take(self.stream.received, clock(), self.stream.t0)
                for d in dropped:
                    self.voice.advance(d, self.stream)
                    log.debug("live: frame %d dropped before rendering (late)", d)
                if i < 0:
                    continue
                weight = self.voice.advance(i, self.stream)
                context = self.stream.context(i, radius, engine.fields, self.posteriors,
                                              self._gain())  # fmt: skip
                arrival = self.stream.arrival(samples_needed(i, radius, self.ppg))
            t = clock()
            try:
                image = engine.render(i, context, weight)
            except Exception:  # noqa: BLE001 - logged, and the session ends
                log.exception("live: rendering frame %d failed", i)
                self.stopped = True
                if self.on_failure is not None:
                    self.loop.call_soon_threadsafe(self.on_failure)
                return
            self.scheduler.rendered_in(clock() - t)
            self.mouth_moved += engine.change > MOVED
            if self.scheduler.on_time(i, clock()):
                self.loop.call_soon_threadsafe(self.frames.put_nowait, (i, image, arrival))
            else:
                log.debug("live: frame %d dropped after rendering (late)", i)

    # ---------------------------------------------------------------- sending
    def sent(self, kind: str, index: int, when: float) -> None:
        """Pair each frame's send time with its audio's (stream sample 640 i = packet 2 i)."""
        if kind == "video":
            k = index * SAMPLES_PER_FRAME // PACKET
            if k in self.audio_sent:
                self.offsets.append(when - self.audio_sent[k])
            else:
                self.video_sent[index] = when
        else:
            self.audio_sent[index] = when
            self.audio_sent.pop(index - 500, None)  # 10 s of history
            if index % 2 == 0 and index // 2 in self.video_sent:
                self.offsets.append(self.video_sent.pop(index // 2) - when)

    def figures(self) -> dict:
        out = self.scheduler.figures()
        off = np.asarray(self.offsets) * 1000
        out.update({"seconds": clock() - self.opened, "frames_dropped_at_send": self.late_sends,
                    "delay_ms": self.delay * 1000,
                    "av_offset_ms_mean": float(off.mean()) if len(off) else None,
                    "av_offset_ms_max_abs": float(np.abs(off).max()) if len(off) else None,
                    "av_offset_ms_p95_abs": float(np.percentile(np.abs(off), 95))
                    if len(off) else None,
                    "av_pairs": len(off), "frames_mouth_moved": self.mouth_moved,
                    "input_shifts": len(self.stream.shifts),
                    "input_shift_ms_total": 1000 * float(sum(self.stream.shifts))})  # fmt: skip
        out["frames_dropped"] += self.late_sends
        return out

    def stop(self) -> None:
        self.stopped = True
        with self.cond:
            self.cond.notify_all()
        self.thread.join(timeout=5)


def tracks(session: Session):
    """The outgoing video and audio tracks of `session`."""
    import av
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    class Video(MediaStreamTrack):
        kind = "video"

        async def recv(self):
            while True:
                if session.stopped:
                    raise MediaStreamError
                i, image, arrival = await session.frames.get()
                due = session.scheduler.due(i)
                await asyncio.sleep(max(0.0, due - clock()))
                now = clock()
                if now > due + session.scheduler.tolerance:  # the sender fell behind
                    session.late_sends += 1
                    log.debug("live: frame %d dropped at sending (%.0f ms late)", i,
                              (now - due) * 1000)  # fmt: skip
                    continue
                session.scheduler.sent(i, now, arrival)
                session.sent("video", i, now)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = i * (VIDEO_CLOCK // FPS)
                frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
                return frame

    class Audio(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.k = 0

        async def recv(self):
            await session.started.wait()
            k = self.k
            due = session.stream.t0 + k * PACKET / SAMPLE_RATE + session.delay
            await asyncio.sleep(max(0.0, due - clock()))
            while session.stream.received < (k + 1) * PACKET:  # the input stalled
                if session.stopped:
                    raise MediaStreamError
                await asyncio.sleep(0.005)
            x = session.stream.samples(k * PACKET, (k + 1) * PACKET)
            pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, k * PACKET
            frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
            session.sent("audio", k, clock())
            self.k += 1
            return frame

    return Video(), Audio()


def page(file_mode: bool) -> str:
    text = resources.files("speech2lip.live").joinpath("page.html").read_text()
    return text.replace("__FILE_MODE__", "true" if file_mode else "false")


def build_app(engine: LiveEngine, wav: np.ndarray | None, budget: float, match_level: bool):
    """The aiohttp application: `/` (the page, or "busy"), `/offer` (WebRTC), `/bye` (the
    page is leaving), `/stats` (the current or last session's figures)."""
    from aiohttp import web
    from aiortc import RTCPeerConnection, RTCSessionDescription

    app = web.Application()
    state = {"session": None, "pc": None, "last": None, "sessions": 0}
    app["state"] = state

    async def close(reason: str) -> None:
        session, pc = state["session"], state["pc"]
        if session is None:
            return
        session.stop()
        figures = session.figures()
        # no await between freeing the server and recording the figures: a client that sees it
        # free (the page answers 200) also sees this session's figures in /stats
        state.update(session=None, pc=None, last=figures)
        await pc.close()
        log.info("live: session %d ended (%s): %d frames rendered, %d dropped, latency mean "
                 "%s ms, p95 %s ms, audio/video offset at send max %s ms", state["sessions"],
                 reason, figures["frames_rendered"], figures["frames_dropped"],
                 _ms(figures["latency_ms_mean"]), _ms(figures["latency_ms_p95"]),
                 _ms(figures["av_offset_ms_max_abs"]))  # fmt: skip

    async def index(request):
        if state["session"] is not None:
            return web.Response(text=BUSY_PAGE, content_type="text/html", status=503)
        return web.Response(text=page(wav is not None), content_type="text/html")

    async def offer(request):
        if state["session"] is not None:
            return web.json_response({"error": "busy: another client is connected"}, status=409)
        try:
            params = await request.json()
            description = RTCSessionDescription(sdp=params["sdp"], type=params["type"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected a JSON WebRTC offer"}, status=400)
        session = Session(engine, budget, match_level)
        pc = RTCPeerConnection()
        state.update(session=session, pc=pc, sessions=state["sessions"] + 1)
        session.on_failure = lambda: asyncio.ensure_future(close("rendering failed"))
        log.info("live: session %d from %s", state["sessions"], request.remote)

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio" and wav is None:
                asyncio.ensure_future(session.ingest(track))

        @pc.on("connectionstatechange")
        async def on_state():
            log.info("live: connection %s", pc.connectionState)
            if pc.connectionState in ("failed", "closed", "disconnected") and state["pc"] is pc:
                await close(f"connection {pc.connectionState}")

        try:
            await pc.setRemoteDescription(description)
            video, audio = tracks(session)
            pc.addTrack(video)
            pc.addTrack(audio)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # noqa: BLE001 - a malformed offer: refuse it, stay free
            await close("the offer was refused")
            return web.json_response({"error": f"not a usable WebRTC offer: {exc}"}, status=400)
        if wav is not None:
            asyncio.ensure_future(session.play(wav))
        return web.json_response({"sdp": pc.localDescription.sdp,
                                  "type": pc.localDescription.type})  # fmt: skip

    async def bye(request):
        await close("the page left")
        return web.Response(text="bye")

    async def stats(request):
        session = state["session"]
        live = session.figures() if session is not None else None
        return web.json_response({"active": live, "last": state["last"],
                                  "sessions": state["sessions"]})  # fmt: skip

    async def on_shutdown(app):
        await close("the server stopped")

    app.router.add_get("/", index)
    app.router.add_post("/offer", offer)
    app.router.add_post("/bye", bye)
    app.router.add_get("/stats", stats)
    app.on_shutdown.append(on_shutdown)
    return app


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f}"
