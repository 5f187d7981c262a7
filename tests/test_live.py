"""Live mode without a browser: the stream's features, the frame scheduler (fake clock), the
voice tracker, the one-frame renderer, and the command's bad-input lines."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import results_folder

from speech2lip.data.audio import SAMPLES_PER_FRAME, frame_mel_windows
from speech2lip.live.stream import (
    PACKET,
    AudioStream,
    FrameScheduler,
    VoiceTracker,
    lookahead,
    samples_needed,
)
from speech2lip.renderer import mel_contexts


def _speechlike(n_frames: int, seed: int = 0) -> np.ndarray:
    """Noise bursts with silent gaps: features that change from frame to frame."""
    rng = np.random.default_rng(seed)
    wav = rng.normal(0, 0.1, n_frames * SAMPLES_PER_FRAME).astype(np.float32)
    envelope = (np.sin(np.arange(len(wav)) / 1600.0) > 0).astype(np.float32)
    return wav * envelope


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_streamed_features_equal_the_whole_recordings(radius):
    n = 60
    wav = _speechlike(n)
    offline = mel_contexts(frame_mel_windows(wav, n), radius)
    stream = AudioStream()
    for i in range(n - 8):  # the last frames' windows would run past the recording
        while stream.received < samples_needed(i, radius):
            stream.push(wav[stream.received : stream.received + PACKET], now=0.0)
        np.testing.assert_array_equal(stream.mel_context(i, radius), offline[i])


def test_a_frame_waits_for_its_look_ahead_and_no_longer():
    # radius 2: frame i's last window (i) ends at mel frame 3.2 i + 15, + 400 samples of STFT
    assert samples_needed(10, 2) == (32 + 15) * 200 + 400
    assert samples_needed(11, 2) == (35 + 15) * 200 + 400
    assert lookahead(2) == pytest.approx(3400 / 16000)
    assert all(samples_needed(i + 1, 2) >= samples_needed(i, 2) for i in range(100))
    # the voice-activity chunks of frame i + 2 are always inside the mel look-ahead
    assert samples_needed(10, 0) >= (10 + 3) * SAMPLES_PER_FRAME


def test_the_stream_keeps_a_bounded_window_and_knows_when_audio_arrived():
    stream = AudioStream(keep_s=1.0)
    for k in range(500):  # 10 s in 20 ms packets, one every 20 ms from t = 5
        stream.push(np.full(PACKET, k, np.float32), now=5.0 + 0.02 * k)
    assert len(stream.buffer) == 16000 and stream.received == 500 * PACKET
    assert len(stream.arrivals) <= 60
    assert stream.t0 == 5.0
    assert stream.arrival(480 * PACKET + 1) == pytest.approx(5.0 + 0.02 * 480)
    assert stream.arrival(481 * PACKET) == pytest.approx(5.0 + 0.02 * 480)
    np.testing.assert_array_equal(stream.samples(499 * PACKET - 2, 499 * PACKET + 2),
                                  [498, 498, 499, 499])  # fmt: skip
    assert stream.samples(0, 4).tolist() == [0, 0, 0, 0]  # forgotten: read as silence


def test_a_stalled_input_moves_the_streams_clock_and_jitter_does_not():
    stream = AudioStream()
    packet = np.zeros(PACKET, np.float32)
    rng = np.random.default_rng(0)
    k = 0
    for _ in range(100):  # 2 s with up to 35 ms of jitter, and a 0.3 s gap made up at once
        late = 0.3 if k == 60 else float(rng.uniform(0, 0.035)) if k else 0.0
        stream.push(packet, now=10.0 + 0.02 * k + late)
        k += 1
    assert stream.t0 == 10.0 and stream.shifts == []
    for _ in range(50):  # the sender stalled for 0.3 s and goes on from there, for 1 s
        stream.push(packet, now=10.3 + 0.02 * k)
        k += 1
    assert stream.t0 == pytest.approx(10.3) and sum(stream.shifts) == pytest.approx(0.3)
    shifts = len(stream.shifts)
    for _ in range(30):  # a fast clock: packets 50 ms early, for 0.6 s
        stream.push(packet, now=10.25 + 0.02 * k)
        k += 1
    assert stream.t0 == pytest.approx(10.25) and len(stream.shifts) == shifts + 1
    # the scheduler follows: frame 0 is now due 0.25 s later than in the first reckoning
    sched = FrameScheduler(0, delay=0.5)
    sched.take(stream.received, now=10.0, t0=stream.t0)
    assert sched.due(0) == pytest.approx(10.75)


def test_the_scheduler_renders_in_order_and_drops_what_cannot_leave_on_time():
    radius, delay = 2, 0.4
    sched = FrameScheduler(radius, delay)
    received = samples_needed(3, radius)  # frames 0..3 have their audio
    assert sched.take(received, now=0.0, t0=0.0) == (0, [])
    assert sched.due(0) == pytest.approx(0.4) and sched.due(5) == pytest.approx(0.6)
    assert sched.on_time(0, now=0.41)
    sched.sent(0, now=0.41, arrival=0.3)
    # the renderer stalled: at t = 0.55 frames 1 and 2 (due 0.44, 0.48; tolerance 0.04) are lost
    assert sched.take(received, now=0.55, t0=0.0) == (3, [1, 2])
    assert sched.take(received, now=0.55, t0=0.0) == (-1, [])  # frame 4's audio is not here
    assert not sched.on_time(3, now=0.6)  # due 0.52: too late once rendered
    figures = sched.figures()
    assert figures["frames_rendered"] == 1 and figures["frames_dropped"] == 3
    assert figures["latency_ms_median"] == pytest.approx(110)


def test_the_scheduler_allows_for_its_render_time():
    sched = FrameScheduler(2, delay=0.1)
    for _ in range(20):
        sched.rendered_in(0.03)
    assert sched.cost == pytest.approx(0.03, abs=1e-3)
    received = samples_needed(1, 2)
    # frame 0 is due at 0.1 (+0.04); starting at 0.12 it would finish at about 0.15: dropped
    assert sched.take(received, now=0.12, t0=0.0) == (1, [0])
    # a stall of a whole second once: still at most one frame period of it counts
    sched.rendered_in(1.0)
    assert sched.cost > 0.2
    assert sched.take(samples_needed(2, 2), now=0.13, t0=0.0) == (2, [])


class _LoudnessVad:
    """A stand-in for silero-vad: speech where the chunk is loud."""

    def reset_states(self) -> None:
        pass

    def __call__(self, chunk, rate):
        return 1.0 if float(chunk.abs().mean()) > 0.01 else 0.0


def test_the_mouth_rests_after_a_silent_run_and_opens_again_for_speech():
    stream = AudioStream()
    speech = np.full(40 * SAMPLES_PER_FRAME, 0.1, np.float32)
    silence = np.zeros(40 * SAMPLES_PER_FRAME, np.float32)
    wav = np.concatenate([speech, silence, speech])
    voice = VoiceTracker(_LoudnessVad(), min_frames=6, ramp=3)
    weights = []
    for i in range(115):  # as the render thread does: feed what came, then the next frame
        stream.push(wav[stream.received : samples_needed(i, 2)], now=0.0)
        voice.feed(stream)
        weights.append(voice.advance(i, stream))
    weights = np.array(weights)
    assert (weights[:42] == 0).all()  # speech, and the hangover after it
    assert (weights[55:78] == 1).all()  # resting, still
    assert weights[78] < 1 and (weights[82:] == 0).all()  # leaves rest before speech at 80
    assert set(np.round(np.diff(weights), 6)) <= {0, round(1 / 3, 6), round(-1 / 3, 6)}
    assert voice.level_db() == pytest.approx(-20, abs=0.01)  # 0.1 RMS


def test_without_a_vad_every_frame_is_speech():
    stream = AudioStream()
    stream.push(np.zeros(30 * SAMPLES_PER_FRAME, np.float32), now=0.0)
    voice = VoiceTracker(None, min_frames=6, ramp=3)
    voice.feed(stream)
    assert all(voice.advance(i, stream) == 0 for i in range(25))


# ---------------------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def subject(demo_model, demo_geometry, demo_warp, tmp_path_factory):
    """A results/<subject> folder as the pipeline writes it (links to the demo's outputs)."""
    base = tmp_path_factory.mktemp("results") / "demo"
    return results_folder(base, demo_model, demo_geometry, demo_warp)


def test_the_live_frame_is_the_renderers_frame(subject, demo_warp):
    import torch

    from speech2lip.config import RenderConfig
    from speech2lip.data.shards import WarpData
    from speech2lip.live.engine import LiveEngine
    from speech2lip.renderer import FIELDS, Renderer, paste
    from speech2lip.renderer.frames import FrameSource

    torch.manual_seed(0)
    engine = LiveEngine(subject / "train/model.pt", size=None, start_frame=5, frames=20)
    from speech2lip.data.batches import read_audio

    data = WarpData(demo_warp / "index.json", fields=FIELDS + list(engine.fields))
    heard = read_audio(data, np.arange(len(data)), engine.model.sizes.features)
    ctx = mel_contexts(heard, engine.radius)
    renderer = Renderer(engine.model, data, RenderConfig(), "cpu")
    frames = FrameSource(subject / "resample/frames.mkv", engine.width, engine.height, len(data))
    for i in (0, 7, 19, 25):  # 25: on the way back (ping-pong): background 5 + 13
        k = engine.background(i)
        assert k == (i if i < 20 else 38 - i)
        background = engine.ids[k]
        mouths, origins = renderer.mouths(ctx[background][None], np.array([background]))
        expected = paste(frames[background], mouths[0], origins[0])
        got = engine.render(i, ctx[background])
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected).max() <= 1


def test_at_rest_the_live_mouth_ignores_the_audio(subject):
    from speech2lip.live.engine import LiveEngine

    engine = LiveEngine(subject / "train/model.pt", size=128, frames=4)
    assert engine.size == (128, 128)
    rng = np.random.default_rng(1)
    rows = 80 + 14 * ("ppg" in engine.fields)
    a, b = (rng.uniform(-4, 0, (2 * engine.radius + 1, rows, 16)).astype(np.float32)
            for _ in range(2))  # fmt: skip
    assert engine.render(2, a, 1.0).shape == (128, 128, 3)
    np.testing.assert_array_equal(engine.render(2, a, 1.0), engine.render(2, b, 1.0))
    assert not np.array_equal(engine.render(2, a, 0.0), engine.render(2, b, 0.0))
    # at rest the lips are the real ones of a closed frame of the subject (where valid)
    import torch

    seen, compose = {}, engine.model.compose

    def spy(lips, *args):
        seen["lips"] = lips
        return compose(lips, *args)

    engine.model.compose = spy
    engine.render(2, a, 1.0)
    real = engine.rest_lips
    valid = real[3:].bool().expand(3, -1, -1)
    assert valid.float().mean() > 0.9
    torch.testing.assert_close(seen["lips"][0][valid], real[:3][valid])


def test_missing_pipeline_outputs_are_named(subject, tmp_path):
    from speech2lip.errors import Speech2LipError
    from speech2lip.live.engine import LiveEngine

    with pytest.raises(Speech2LipError, match="not found; train one first"):
        LiveEngine(tmp_path / "nope/train/model.pt")
    (tmp_path / "lonely/train").mkdir(parents=True)
    (tmp_path / "lonely/train/model.pt").symlink_to(subject / "train/model.pt")
    with pytest.raises(Speech2LipError, match=r"lonely/warp/index.json not found"):
        LiveEngine(tmp_path / "lonely/train/model.pt")
    with pytest.raises(Speech2LipError, match="--start-frame 999 is outside"):
        LiveEngine(subject / "train/model.pt", start_frame=999)


def _live(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "speech2lip", "live", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_a_bad_model_path_is_one_line(tmp_path):
    out = _live(tmp_path / "missing.pt", "--port", "0")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"speech2lip live: error: model {tmp_path / 'missing.pt'} not found; train one first, "
        "e.g. `snakemake --cores 2 results/<subject>/train/model.pt`"
    ]


def test_a_port_in_use_is_one_line(subject):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = _live(subject / "train/model.pt", "--port", port)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"speech2lip live: error: port {port} on 127.0.0.1 is in use (another live server?); "
        "pick a free one with --port"
    ]


def test_a_bad_audio_file_is_one_line(subject, tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio at all")
    out = _live(subject / "train/model.pt", "--port", "0", "--audio", bad)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], out.stderr


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--port", "70000", "--port 70000: a port is 0..65535 (0: any free port)"),
    ("--size", "8", "--size 8: at least 16 pixels"),
    ("--frames", "0", "--frames 0: at least one background frame"),
    ("--budget-ms", "-5", "--budget-ms -5.0: 0..5000 ms"),
])  # fmt: skip
def test_options_out_of_range_are_one_line(subject, option, value, says):
    out = _live(subject / "train/model.pt", option, value)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"speech2lip live: error: {says}"]


def test_the_server_is_free_only_once_the_sessions_figures_are_kept(subject, monkeypatch):
    """Leaving: while the connection is still closing the page stays "busy"; once it answers
    200, /stats already has the finished session's figures (CI once saw 200 and no figures)."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from speech2lip.live.engine import LiveEngine
    from speech2lip.live.server import build_app

    close = RTCPeerConnection.close

    async def slow_close(self):
        await asyncio.sleep(0.5)
        await close(self)

    engine = LiveEngine(subject / "train/model.pt", size=64, frames=2)

    async def scenario():
        client = TestClient(TestServer(build_app(engine, None, 0.05, True)))
        await client.start_server()
        browser = RTCPeerConnection()
        try:
            browser.addTransceiver("video", direction="recvonly")
            browser.addTransceiver("audio", direction="sendrecv")
            await browser.setLocalDescription(await browser.createOffer())
            answer = await client.post("/offer", json={"sdp": browser.localDescription.sdp,
                                                       "type": "offer"})  # fmt: skip
            assert answer.status == 200
            await browser.setRemoteDescription(RTCSessionDescription(**await answer.json()))
            assert (await client.get("/")).status == 503
            monkeypatch.setattr(RTCPeerConnection, "close", slow_close)
            leaving = asyncio.ensure_future(client.post("/bye"))
            seen = []
            while not leaving.done():
                page = (await client.get("/")).status
                figures = await (await client.get("/stats")).json()
                seen.append((page, figures["last"] is not None))
                await asyncio.sleep(0.05)
            assert (await leaving).status == 200
            assert (await client.get("/")).status == 200
            assert seen and all(kept for page, kept in seen if page == 200), seen
            assert (await (await client.get("/stats")).json())["last"]["frames_rendered"] >= 0
        finally:
            monkeypatch.setattr(RTCPeerConnection, "close", close)
            await browser.close()
            await client.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------- phone posteriors, live
def _speech(text: str = "Pam may buy a map, and Bob met my mum by the pub.") -> np.ndarray:
    """espeak-ng saying `text`, 16 kHz float32."""
    from tests.test_phones import _espeak

    wav, _ = _espeak(text)
    return wav.astype(np.float32)


@pytest.mark.parametrize("radius", [0, 2])
def test_streamed_phone_posteriors_equal_the_whole_recordings(radius):
    from speech2lip.data.posteriors import cepstra, cepstral_mean, frame_ppg_windows
    from speech2lip.live.stream import LivePosteriors

    wav = _speech()
    n = len(wav) // SAMPLES_PER_FRAME
    wav = wav[: n * SAMPLES_PER_FRAME]
    mean = cepstral_mean(*cepstra(wav))
    offline = mel_contexts(frame_ppg_windows(wav, n, mean), radius)
    both = np.concatenate([mel_contexts(frame_mel_windows(wav, n), radius), offline], axis=2)
    stream, live = AudioStream(), LivePosteriors(mean, adapt=False)
    twin = LivePosteriors(mean, adapt=False)
    for i in range(n - 8):
        while stream.received < samples_needed(i, radius, ppg=True):
            stream.push(wav[stream.received : stream.received + PACKET], now=0.0)
        np.testing.assert_allclose(stream.ppg_context(i, radius, live), offline[i], atol=1e-5)
        joined = stream.context(i, radius, ("mel", "ppg"), twin)
        np.testing.assert_allclose(joined, both[i], atol=1e-5)
    assert len(live.shares) <= live.keep


def test_phone_posteriors_wait_a_little_longer_and_learn_the_voices_mean():
    from speech2lip.data.posteriors import cepstra, cepstral_mean
    from speech2lip.live.stream import LivePosteriors

    assert all(samples_needed(i, 2, ppg=True) >= samples_needed(i, 2) for i in range(100))
    assert 0 < lookahead(2, ppg=True) - lookahead(2) < 0.03
    wav = _speech()
    stream = AudioStream(keep_s=30.0)
    stream.push(wav, now=0.0)
    live = LivePosteriors(np.zeros(13), prior_frames=10)
    upto = len(wav) // 160 - 6
    for k in range(0, upto, 40):  # in steps, as frames come
        live.update(stream, min(k + 39, upto))
    cep, silent = cepstra(wav[: (upto + 1) * 160])
    heard = cepstral_mean(cep, silent)
    np.testing.assert_allclose(live.total / live.count, heard, atol=0.05 * np.abs(heard).max())


def test_live_takes_a_phone_posterior_model_and_refuses_decoded_phones(
    demo_geometry, demo_warp, tmp_path
):
    from speech2lip.config import ModelSizes, TrainConfig
    from speech2lip.errors import Speech2LipError
    from speech2lip.live.engine import LiveEngine
    from speech2lip.live.stream import LivePosteriors
    from speech2lip.train import run
    from tests.conftest import TINY_SIZES

    for features in ("mel+ppg", "phones"):
        cfg = TrainConfig(steps=2, batch_frames=2, checkpoint_every=2, log_every=2,
                          model=ModelSizes(**TINY_SIZES, features=features),
                          mouth_start=0, sync_weight=0.0)  # fmt: skip
        run(demo_warp / "index.json", tmp_path / features, cfg, threads=1, resume="no",
            device="cpu")  # fmt: skip
        base = results_folder(tmp_path / f"subject-{features}", tmp_path / features / "model.pt",
                              demo_geometry, demo_warp)  # fmt: skip
        if features == "phones":
            with pytest.raises(
                Speech2LipError, match="live mode computes mel and phone posteriors"
            ):
                LiveEngine(base / "train/model.pt", size=64, frames=4)
            continue
        engine = LiveEngine(base / "train/model.pt", size=64, frames=4)
        assert engine.fields == ("mel", "ppg") and engine.cepstral_mean.shape == (13,)
        stream, wav = AudioStream(), _speech()
        stream.push(wav, now=0.0)
        ctx = stream.context(3, engine.radius, engine.fields, LivePosteriors(engine.cepstral_mean))
        assert ctx.shape == (2 * engine.radius + 1, 94, 16)
        assert engine.render(3, ctx).shape == (64, 64, 3)
