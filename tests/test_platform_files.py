"""Platform files checked frame by frame: held copies that decode alike across keyframes, aspect kept, BT.709 colour
tagged, X's least size, music within the platforms' limits, even GIF delays, and what the refusals advise."""

import gc
import re
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from conftest import tiny_job
from morph.config.yaml_file import load_config
from morph.output.delivery import check_platforms, deliver, probe
from morph.errors import MorphError
from morph.config.presets import VideoOptions, plan
from morph.media.video import write_png
from test_axes import clicks


def decoded(path):
    frames = imageio_ffmpeg.read_frames(str(path))
    width, height = next(frames)["size"]
    return [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in frames]


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """60 frames of textured noise drifting in brightness: hard for an encoder, each a different picture."""
    folder = tmp_path_factory.mktemp("renders")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 64, 3)).astype(float)
    files = []
    for i in range(60):
        files.append(folder / f"{i:05d}.png")
        write_png(files[-1], np.clip(base + 2 * i + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return files


@pytest.mark.parametrize("preset, fps, options", [
    ("instagram", 7, VideoOptions()),  # 56 fps: every frame 8 times, a keyframe every 2 s
    ("tiktok", 20, VideoOptions(loop="pingpong", hold_ends=0.5)),
    ("x", 20, VideoOptions(hold_ends=1.0)),
    ("youtube", 7, VideoOptions(hold_ends=1.0, loop="pingpong")),  # a keyframe every 0.5 s
    ("youtube-shorts", 7, VideoOptions(hold_ends=2.5, fit="pad")),
])
def test_every_held_copy_decodes_like_its_first_showing_across_keyframes(renders, tmp_path, preset, fps, options):
    made = deliver(preset, renders, fps, tmp_path / f"held.{preset}.mp4", options)
    delivery = plan(preset, len(renders), fps, 64, 64, options)
    shown = [i for i in delivery.timeline for _ in range(delivery.repeat)]
    frames = decoded(tmp_path / f"held.{preset}.mp4")
    assert len(frames) == len(shown) == made["frames"] and made["duration"] > 4  # two keyframes at least
    runs, start = [], 0
    for k in range(1, len(shown) + 1):
        if k == len(shown) or shown[k] != shown[start]:
            runs.append((start, k))
            start = k
    different = [(a, b) for a, b in runs if any(not np.array_equal(frames[a], frames[j]) for j in range(a + 1, b))]
    assert different == []


def test_a_tall_render_is_never_stretched_to_fit_instagram():
    with pytest.raises(MorphError, match="instagram needs the short side >= 720 px and the long side <= 1920 px.*"
                                         "set video.fit: pad or crop"):
        plan("instagram", 80, 20, 64, 192)
    tall = plan("instagram", 80, 20, 64, 192, VideoOptions(fit="pad")).shape
    assert abs(tall.width / tall.height - 9 / 16) < 0.01
    tiktok = plan("tiktok", 80, 20, 64, 192).shape
    assert (tiktok.width, tiktok.height) == (720, 2160)  # its long side allows the aspect: kept


def test_every_file_is_bt709_and_colours_come_back(tmp_path):
    green = np.zeros((64, 64, 3), np.uint8)
    green[:, :, 0] = np.linspace(0, 255, 64).astype(np.uint8)[None, :]  # a red ramp in the middle of the pad
    files = []
    for i in range(60):
        files.append(tmp_path / f"{i:05d}.png")
        write_png(files[-1], green)
    made = deliver("tiktok", files, 20, tmp_path / "pad.mp4", VideoOptions(fit="pad", pad="#00FF00"))
    assert made["colour"].startswith("tv, bt709")
    frame = decoded(tmp_path / "pad.mp4")[0]
    assert np.abs(frame[5, 5].astype(int) - [0, 255, 0]).max() <= 3  # the pad: pure green, not (0, 215, 0)
    assert deliver("webm", files, 20, tmp_path / "pad.webm", VideoOptions())["colour"].startswith("tv, bt709")


def test_the_master_is_bt709_too(write_config):
    config = load_config(write_config(frames=3))
    from morph.job import run_job

    assert probe(Path(run_job(config, quiet=True)["video"]))["colour"].startswith("tv, bt709")


def test_x_files_are_at_least_32_pixels(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(files):
        write_png(path, np.full((16, 16, 3), 100 * i, np.uint8))
    made = deliver("x", files * 10, 20, tmp_path / "small.x.mp4", VideoOptions())
    assert (made["width"], made["height"]) == (32, 32) and any("32 px" in n for n in made["notes"])


def noise(path, rate, seconds=3.0):
    """A stereo WAV of white noise: music an AAC encoder spends its whole bitrate on."""
    import wave

    samples = np.random.default_rng(0).integers(-12000, 12000, (int(rate * seconds), 2), dtype=np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


@pytest.mark.parametrize("rate, expected", [(96_000, 48_000), (44_100, 44_100)])
def test_music_is_resampled_and_capped_for_the_platform(renders, tmp_path, rate, expected):
    music = noise(tmp_path / "music.wav", rate)
    timing = SimpleNamespace(audio=str(music), start=0.0, duration=3.0)
    made = deliver("instagram", renders, 20, tmp_path / "reel.mp4", VideoOptions(), timing)
    assert made["audio"] and made["music"]["codec"] == "aac" and made["music"]["hz"] == expected
    assert made["music"]["kbps"] <= 128 * 1.1  # Reels publishes 128 kb/s


def test_a_gif_at_a_rate_it_cannot_show_evenly_takes_the_nearest_it_can_and_says_so(renders, tmp_path):
    made = deliver("gif", renders[:30], 30, tmp_path / "walk.gif", VideoOptions())
    with Image.open(tmp_path / "walk.gif") as gif:
        delays = []
        for index in range(gif.n_frames):
            gif.seek(index)
            delays.append(gif.info["duration"])
    assert set(delays) == {30} and len(delays) == 30  # 3 hundredths each: 33.3 fps
    assert any("33.33 fps, 3 hundredths a frame" in n and "faster than the walk's 30 fps" in n for n in made["notes"])


def test_a_timed_walk_too_short_for_a_platform_is_told_to_lengthen_its_music(tmp_path):
    music = clicks(tmp_path / "music.wav", seconds=3.0)
    config = load_config(tiny_job(tmp_path, frames=None, timing={"audio": str(music), "duration": 2},
                                  video={"preset": "instagram"}))
    with pytest.raises(MorphError, match="set timing.duration: 3") as refused:
        check_platforms(config, config.frame_count())
    assert "render at least" not in str(refused.value)


def test_making_a_platform_file_leaves_no_file_open(renders, tmp_path, monkeypatch):
    # a file left open warns from its finaliser, where an error cannot propagate: it reaches sys.unraisablehook
    unraised = []
    monkeypatch.setattr(sys, "unraisablehook", unraised.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        deliver("x", renders[:20], 20, tmp_path / "x.mp4", VideoOptions())
        gc.collect()
    assert [str(u.exc_value) for u in unraised] == []


def x264_options(path) -> dict:
    """The settings x264 wrote into the stream it encoded (its SEI message): {'bframes': '2', 'keyint': '10', …}."""
    options = re.search(rb"x264 - core .*? options: ([^\x00]*)", path.read_bytes()).group(1).decode()
    return dict(option.split("=", 1) for option in options.split() if "=" in option)


def test_youtube_files_have_the_keyframe_interval_and_b_frames_youtube_asks_for(renders, tmp_path):
    """YouTube: 'closed GOP, half the frame rate; 2 consecutive B frames'. Held copies keep none (they decode as
    their first showing only without B-frames between renders), so only the walk at its own rate has them."""
    for name, preset, options in [("own", "youtube", VideoOptions()), ("held", "youtube", VideoOptions(hold_ends=1.0)),
                                  ("x", "x", VideoOptions())]:
        deliver(preset, renders, 20, tmp_path / f"{name}.mp4", options)
    own, held, x = (x264_options(tmp_path / f"{name}.mp4") for name in ("own", "held", "x"))
    assert (own["bframes"], own["keyint"], own["open_gop"]) == ("2", "10", "0")  # 0.5 s at 20 fps, closed
    assert held["bframes"] == "0"
    assert x["bframes"] == "3"  # X asks for nothing: x264's own choice
