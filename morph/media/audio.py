"""The music a walk is timed to: decoded with the ffmpeg that imageio-ffmpeg ships, and muxed into the MP4."""

import re
import subprocess
from pathlib import Path

import numpy as np

from ..errors import MorphError
from ..files import own_partial_name
from .onsets import onset_strength, per_frame, placed_t
from .video import ffmpeg_command, ffmpeg_said

RATE = 22050  # Hz: enough for onsets, and cheap


def track(path: str) -> tuple[float, int]:
    """How long the music at `path` runs (s) and its sample rate (Hz), as ffmpeg reads its header."""
    if not Path(path).is_file():
        raise MorphError(f"timing.audio: {path!r} is not a file")
    done = subprocess.run(ffmpeg_command("-loglevel", "info", "-i", path), capture_output=True, text=True,
                          errors="replace")
    found = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", done.stderr)
    rate = re.search(r"Audio: .*?(\d+) Hz", done.stderr)
    if not found or not rate:
        raise MorphError(f"timing.audio: ffmpeg finds no music in {path!r}; give a .wav, .mp3 or another audio file")
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds), int(rate.group(1))


def decode(path: str, start: float, duration: float) -> np.ndarray:
    """Mono float32 samples [N] of `path` from `start` for `duration` seconds, at RATE."""
    if not Path(path).is_file():
        raise MorphError(f"timing.audio: {path!r} is not a file")
    command = ffmpeg_command("-ss", f"{start}", "-t", f"{duration}", "-i", path, "-vn", "-ac", "1", "-ar", str(RATE),
                             "-f", "f32le", "-")
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0:
        raise MorphError(f"timing.audio: ffmpeg cannot read {path!r} ({ffmpeg_said(done.stderr)})")
    samples = np.frombuffer(done.stdout, dtype=np.float32)
    if samples.size < 0.9 * duration * RATE:
        raise MorphError(f"timing: {path!r} has {samples.size / RATE:.2f} s from start {start:g}, "
                         f"less than duration {duration:g}; shorten timing.duration or move timing.start")
    return samples


def timed_schedule(config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segment [F], t [F], onset strength per step [F - 1]) of a walk timed to its music."""
    timing = config.timing
    samples = decode(timing.audio, timing.start, timing.duration)
    strength, times = onset_strength(samples, RATE)
    frames = config.frame_count()
    steps = per_frame(strength, times, frames, config.fps)
    segment, t = placed_t(steps, config.steps())
    return segment, t, steps


def mux(video: Path, timing, bitrate: int, most_hz: int) -> None:
    """Put the music (AAC, at most `bitrate` bits/s and `most_hz`: faster tracks are resampled to it, 44.1 kHz
    stays) under `video`, trimmed to it; the video stream is copied, not encoded again."""
    partial = own_partial_name(video)
    hz = min(track(timing.audio)[1], most_hz)
    command = ffmpeg_command("-y", "-i", str(video), "-ss", f"{timing.start}", "-t", f"{timing.duration}",
                             "-i", timing.audio, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                             "-b:a", str(bitrate), "-ar", str(hz), "-shortest", "-movflags", "+faststart", "-f", "mp4",
                             str(partial))
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise MorphError(f"timing.audio: ffmpeg could not add the music ({ffmpeg_said(done.stderr)})")
    partial.replace(video)
