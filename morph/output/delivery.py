"""Files for the platforms, made from a walk's lossless PNG frames with the ffmpeg that imageio-ffmpeg ships.

Nothing is rendered here, blended or interpolated: every frame of a file is one rendered frame, cropped, scaled
or padded; a rate the platform needs is reached by holding every frame the same whole number of times. Each
file is read back and checked against its preset before it takes its final name.
"""

import os
import re
import subprocess
from contextlib import suppress
from dataclasses import fields, replace
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import imageio_ffmpeg
import numpy as np

from ..media.audio import mux
from ..errors import MorphError
from ..files import own_partial_name, read_walk, removed_if_refused
from ..config.presets import PRESETS, DeliveryPlan, Shape, VideoOptions, plan
from ..media.video import TO_BT709, ffmpeg_command, ffmpeg_said, read_png

MASTER_CRF = 16  # the master's x264 quality (video.py); the platform files use the same
# VP9 quality whose PSNR against the PNG frames is about the master's (docs/platforms.md: the test measures it)
WEBM_CRF = 24
MAX_RATE = 25_000_000  # bits/s: the highest rate these platforms list; keeps the H.264 level what phones decode
MAX_ZONES = 120_000  # characters of x264 zones: one argument to ffmpeg must stay under Linux's 128 KiB
KEYFRAME_S = 2.0  # seconds between keyframes of a file with held frames, where the platform does not say
# Under CRF x264 sets a keyframe's quantizer from the P-frames before it (less log2(ipratio) / 6): in a file with
# held frames those are mostly the coarsest repeats, so by default a keyframe came out at QP ~41, coarse enough that
# its repeats coded corrections even at QP 51 and decoded as 2-3 other pictures. A large ratio, floored, keeps
# keyframes at about the quality of the frames between them (measured: QP 41 -> 24 on a 7 fps Instagram file).
HELD_KEYFRAME = "ipratio=30:qpmin=12"
GIF_SHRINK = 0.75  # a GIF over its size limit is made again this much smaller, down to GIF_SMALLEST px
GIF_SMALLEST = 32


def _graph(shape: Shape, pad: str, gif: bool) -> str:
    """The ffmpeg filter graph from the rendered frames [0:v] to the file's frames [v]."""
    steps = [f"crop={shape.crop[2]}:{shape.crop[3]}:{shape.crop[0]}:{shape.crop[1]}"] if shape.crop else []
    steps.append(f"scale={shape.content[0]}:{shape.content[1]}:flags=lanczos")
    chain = ",".join(steps)
    if not shape.pad:
        graph = f"[0:v]{chain}[c]"
    elif pad == "blur":  # the frame itself, enlarged to cover the canvas and blurred, behind the frame
        graph = (f"[0:v]split[f][b];[b]scale={shape.width}:{shape.height}:force_original_aspect_ratio=increase,"
                 f"crop={shape.width}:{shape.height},boxblur=luma_radius=min(h\\,w)/16:luma_power=2[bg];[f]{chain}[fg];"
                 "[bg][fg]overlay=(W-w)/2:(H-h)/2[c]")
    else:
        colour = pad.replace("#", "0x")
        graph = f"[0:v]{chain},pad={shape.width}:{shape.height}:(ow-iw)/2:(oh-ih)/2:color={colour}[c]"
    if gif:  # one palette made from all the frames, then used for each
        return graph + ";[c]split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a[v]"
    return graph + f";[c]{TO_BT709}[v]"


def _codec(delivery: DeliveryPlan) -> list[str]:
    preset = delivery.preset
    if preset.container == "gif":
        return ["-loop", "0"]
    if preset.container == "webm":
        return ["-c:v", "libvpx-vp9", "-crf", str(WEBM_CRF), "-b:v", "0", "-row-mt", "1", "-deadline", "good",
                "-cpu-used", "2"]
    args = ["-c:v", "libx264", "-profile:v", "high", "-crf", str(MASTER_CRF), "-preset", "medium",
            "-movflags", "+faststart"]
    if preset.name == "master":
        return args
    caps = [MAX_RATE] + ([preset.max_bitrate] if preset.max_bitrate else [])
    if preset.max_bytes:  # 10 % left for the container and the encoder's overshoot
        caps.append(int(0.9 * preset.max_bytes * 8 / delivery.duration))
    args += ["-maxrate", str(min(caps)), "-bufsize", str(min(caps))]
    if delivery.repeat > 1 or len(set(delivery.timeline)) < len(delivery.timeline):
        return args + _held(delivery)
    params = []  # what the platform asks of the stream: its keyframe interval, its consecutive B-frames
    if preset.keyframe_s:
        keyint = max(1, round(preset.keyframe_s * delivery.fps))
        params.append(f"keyint={keyint}:min-keyint={keyint}:scenecut=0")
    if preset.b_frames is not None:
        params.append(f"bframes={preset.b_frames}")
    return args + (["-x264-params", ":".join(params)] if params else [])


def _held(delivery: DeliveryPlan) -> list[str]:
    """x264 settings under which a held frame decodes exactly like the frame it repeats: no B-frames (a B-frame
    between two renders would mix them); after its first showing, a frame's repeats (and a held end's) coded at
    the coarsest quantizer, so every block is skipped, a copy of the frame before; keyframes only where a run of
    repeats starts, the first such place after every 2 s or the platform's interval (an automatic one could
    fall inside a run), each as fine as the frames between them (HELD_KEYFRAME)."""
    n, runs, start = delivery.repeat, [], 0
    for k in range(1, len(delivery.timeline) + 1):
        if k == len(delivery.timeline) or delivery.timeline[k] != delivery.timeline[start]:
            runs.append((start * n, k * n - 1))  # file frames showing one rendered frame
            start = k
    zones = "/".join(f"{first + 1},{last},q=51" for first, last in runs if last > first)
    if len(zones) > MAX_ZONES:
        raise MorphError(f"video: {delivery.preset.name} at {delivery.fps:g} fps holds each of "
                         f"{len(delivery.timeline)} frames {n} times, more than one file can say; export a shorter "
                         "walk, or use a preset that takes the walk's own rate")
    keyframes, due = [], 0.0
    for first, _ in runs:
        if first / delivery.fps >= due:
            keyframes.append(first)
            due = first / delivery.fps + (delivery.preset.keyframe_s or KEYFRAME_S)
    zones = f":zones={zones}" if zones else ""  # none held (a bounce shows each frame once): x264 refuses "zones="
    return ["-x264-params", f"bframes=0:keyint=infinite:scenecut=0:{HELD_KEYFRAME}{zones}",
            "-force_key_frames", ",".join(f"{f / delivery.fps:.6f}" for f in keyframes)]


def _rate(fps) -> str:
    """A frame rate as ffmpeg takes it exactly: 20, 59.94, or 100/3 (a GIF's 3 hundredths a frame)."""
    return f"{fps.numerator}/{fps.denominator}" if isinstance(fps, Fraction) else f"{fps:g}"


class FileEncoder:
    """One file's ffmpeg, fed rendered frames (uint8 [H, W, 3]) in the order of `delivery`'s timeline: `arrived(i,
    image)` for each frame of the walk in order writes as much of the timeline as the frames so far allow (a walk
    shown forwards: all of it, while rendering), `finish(frames)` the rest from the PNG `frames`, then waits for the
    file, which appears under `path` only once whole. Use as a context manager: leaving it kills an ffmpeg
    not finished."""

    def __init__(self, delivery: DeliveryPlan, path: Path, pad: str, width: int, height: int):
        self.delivery, self.path, self._partial, self._next = delivery, path, own_partial_name(path), 0
        command = ffmpeg_command("-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                                 "-framerate", _rate(delivery.fps), "-i", "-",
                                 "-filter_complex", _graph(delivery.shape, pad, delivery.preset.container == "gif"),
                                 "-map", "[v]", *_codec(delivery), "-r", _rate(delivery.fps),
                                 "-f", delivery.preset.container, str(self._partial))
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def arrived(self, index: int, image: np.ndarray) -> None:
        """Frame `index` of the walk, the one after the frame before; the timeline's turns of earlier frames (a
        bounce back, a reversed walk) wait for finish()."""
        timeline = self.delivery.timeline
        while self._next < len(timeline) and timeline[self._next] == index:
            self._write(image)
            self._next += 1

    def _write(self, image: np.ndarray) -> None:
        data = np.ascontiguousarray(image).tobytes()
        try:
            for _ in range(self.delivery.repeat):
                self._process.stdin.write(data)
        except BrokenPipeError:  # ffmpeg stopped: what it said
            self._failed()

    def _failed(self):
        self._process.kill()
        raise MorphError(f"ffmpeg could not write {self.path.name}: {ffmpeg_said(self._process.stderr.read())}")

    def finish(self, frames: list[Path]) -> None:
        for index in self.delivery.timeline[self._next:]:
            self._write(read_png(frames[index]))
        self._next = len(self.delivery.timeline)
        self._process.stdin.close()
        if self._process.wait() != 0:
            self._failed()
        self._partial.replace(self.path)

    def stop(self) -> None:
        """Kill ffmpeg unless finish() returned, and remove what it wrote; once finished, only its pipes close."""
        self._process.kill()  # nothing once ffmpeg was waited for
        self._process.wait()
        self._partial.unlink(missing_ok=True)  # gone already once whole: renamed
        with suppress(BrokenPipeError):  # what was buffered for a killed ffmpeg is dropped
            self._process.stdin.close()
        self._process.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()


def encode(delivery: DeliveryPlan, frames: list[Path], path: Path, pad: str = "black") -> None:
    """Write `delivery` of the PNG `frames` to `path` (under a temporary name until it is whole)."""
    height, width = read_png(frames[0]).shape[:2]
    with FileEncoder(delivery, path, pad, width, height) as encoder:
        encoder.finish(frames)


def probe(path: Path) -> dict:
    """What a video file holds, read back with ffmpeg: codec, profile, level, pixel format, size, fps, frames,
    duration, bytes."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    info = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    stream = re.search(r"Video: (\w+)(?: \(([^)]*)\))?.*?, (\w+)(?:\([^)]*\))?, (\d+)x(\d+)", info)
    if not stream:
        raise MorphError(f"{path}: ffmpeg finds no video stream in it")
    fps = re.search(r"([\d.]+) fps", info)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    level = None
    if stream.group(1) == "h264":
        trace = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path), "-c", "copy", "-bsf:v", "trace_headers",
                                "-frames:v", "1", "-f", "null", "-"], capture_output=True, text=True).stderr
        found = re.search(r"level_idc\s+\S+ = (\d+)", trace)
        level = int(found.group(1)) / 10 if found else None
    line = re.search(r"Audio: .*", info)
    audio = re.search(r"Audio: (\w+).*?, (\d+) Hz(?:.*?, (\d+) kb/s)?", line.group(0)) if line else None
    colour = re.search(r"yuv420p\(([^)]*)\)", info)
    return {"codec": stream.group(1), "profile": stream.group(2) if stream.group(1) == "h264" else None,
            "level": level, "pix_fmt": stream.group(3), "width": int(stream.group(4)),
            "height": int(stream.group(5)), "fps": float(fps.group(1)) if fps else None, "frames": frames,
            "duration": seconds, "bytes": path.stat().st_size, "colour": colour.group(1) if colour else None,
            "music": {"codec": audio.group(1), "hz": int(audio.group(2)),
                      "kbps": int(audio.group(3)) if audio.group(3) else None} if audio else None}


def check(delivery: DeliveryPlan, found: dict) -> list[str]:
    """Where a written file breaks its preset's limits (empty: it meets them all)."""
    preset, problems = delivery.preset, []
    expected = {"mp4": ("h264", "yuv420p"), "webm": ("vp9", "yuv420p"), "gif": ("gif", None)}[preset.container]
    if found["codec"] != expected[0] or (expected[1] and found["pix_fmt"] != expected[1]):
        problems.append(f"{found['codec']} {found['pix_fmt']}, not {expected[0]} {expected[1] or ''}")
    if preset.container == "mp4" and found["profile"] != "High":
        problems.append(f"H.264 profile {found['profile']}, not High")
    if found["frames"] != delivery.frames:
        problems.append(f"{found['frames']} frames, not {delivery.frames}")
    if (found["width"], found["height"]) != (delivery.shape.width, delivery.shape.height) or found["width"] % 2:
        problems.append(f"{found['width']}x{found['height']}, not {delivery.shape.width}x{delivery.shape.height}")
    if preset.max_bytes and found["bytes"] > preset.max_bytes:
        problems.append(f"{found['bytes']} bytes, over {preset.name}'s {preset.max_bytes}")
    if preset.container != "gif" and (found["colour"] or "").split(",")[:2] != ["tv", " bt709"]:
        problems.append(f"colour {found['colour']}, not tagged limited-range BT.709")
    return problems


def check_audio(preset, found: dict) -> list[str]:
    """Where a file's music breaks its preset's limits (AAC, sample rate, bitrate; 10 % over the asked bitrate is
    the encoder's own margin)."""
    audio, problems = found["music"], []
    if audio is None:
        return ["no music"]
    if audio["codec"] != "aac" or audio["hz"] > preset.audio_rate:
        problems.append(f"music {audio['codec']} at {audio['hz']} Hz, not AAC at {preset.audio_rate} Hz or less")
    if audio["kbps"] and audio["kbps"] * 1000 > 1.1 * preset.audio_bitrate:
        problems.append(f"music at {audio['kbps']} kb/s, over {preset.audio_bitrate // 1000} kb/s")
    return problems


def _encoded(delivery: DeliveryPlan, frames: list[Path], path: Path, pad: str, name: str,
             streamed: FileEncoder | None = None) -> dict:
    """Encode `delivery` to `path` (or finish `streamed`, its encoder fed while rendering) and read it back (probe);
    a GIF over its size limit is made smaller until it fits. A file that breaks its preset's limits is refused (the
    message calls it `name`)."""
    preset = delivery.preset.name
    while True:
        if streamed:
            with streamed:
                streamed.finish(frames)
            streamed = None
        else:
            encode(delivery, frames, path, pad)
        found = probe(path)
        problems = check(delivery, found)
        too_big = delivery.preset.container == "gif" and any("bytes" in p for p in problems)
        if not too_big or delivery.shape.width * GIF_SHRINK < GIF_SMALLEST:
            break
        width = int(delivery.shape.width * GIF_SHRINK) // 2 * 2  # even sides, as everywhere
        height = 2 * round(delivery.shape.height * GIF_SHRINK / 2)
        delivery.shape = Shape(width, height, content=(width, height),
                               notes=delivery.shape.notes + [f"made smaller to stay under {preset}'s size limit"])
    if problems:
        raise _breaks(name, preset, problems)
    return found


def _breaks(name: str, preset: str, problems: list[str]) -> MorphError:
    return MorphError(f"{name} would break {preset}'s limits ({'; '.join(problems)}); not written")


def deliver(preset: str, frames: list[Path], fps: int, path: Path, options: VideoOptions, timing=None,
            streamed: FileEncoder | None = None) -> dict:
    """Make, read back and check one platform file; a GIF over its size limit is made smaller until it fits.
    `timing` (a walk timed to music): an MP4 that shows the walk as it was timed carries the music too. `streamed`:
    its encoder, fed the frames while they were rendered (LiveDeliveries)."""
    if streamed:
        delivery = streamed.delivery
    else:
        height, width = read_png(frames[0]).shape[:2]
        delivery = plan(preset, len(frames), fps, width, height, options)
    # the music fits only the walk as timed: not bounced, held or reversed (a held frame moves the beats)
    music = timing is not None and delivery.preset.container == "mp4" and delivery.timeline == list(range(len(frames)))
    if music and not Path(timing.audio).is_file():
        raise MorphError(f"timing.audio: {timing.audio!r}, the music of this walk, is not a file (any more); put it "
                         "back, or choose a file that shows the walk otherwise (--loop, --hold-ends, --direction)")
    # made under a working name and renamed when whole (music too): a failed file leaves nothing behind, not even
    # a silent one, and a file made earlier under the same name stays
    working = _working(path)
    with removed_if_refused(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            found = _encoded(delivery, frames, working, options.pad, path.name, streamed)
            if music:
                mux(working, timing, delivery.preset.audio_bitrate, delivery.preset.audio_rate)
                found = probe(working)
                problems = check_audio(delivery.preset, found)
                if problems:
                    raise _breaks(path.name, preset, problems)
            os.replace(working, path)
        except BaseException:
            working.unlink(missing_ok=True)
            raise
    return {"preset": preset, "file": str(path), "fps": float(delivery.fps), "repeat": delivery.repeat,
            "shown_frames": len(delivery.timeline), "notes": delivery.shape.notes, "audio": music,
            **found, "bytes": path.stat().st_size}


def _working(path: Path) -> Path:
    return path.with_name(f".{path.stem}.making{path.suffix}")


def summary(made: dict) -> str:
    """What a platform file holds and what was changed to make it fit, in one line."""
    held = f", each frame held {made['repeat']}x" if made["repeat"] > 1 else ""
    music = ", with the music" if made.get("audio") else ""
    notes = f" ({'; '.join(made['notes'])})" if made["notes"] else ""
    return (f"{made['width']}x{made['height']}, {made['fps']:g} fps{held}, {made['duration']:.2f} s, "
            f"{made['bytes'] / 1e6:.2f} MB{music}{notes}")


def check_platforms(config, count: int) -> None:
    """Before rendering: every platform file the job asks for can be made (duration, aspect, frame rate), or a
    MorphError that says what to change. An unset size is the model's own, square for every SD family."""
    height, width = config.frame_size()
    for preset in config.video.platforms():
        plan(preset, count, config.fps, width, height, config.video.options(),
             timed=bool(config.timing))


class LiveDeliveries:
    """A job's platform files encoded while its frames are rendered: `write(image)` for each frame of the walk in order
    (the first starts an ffmpeg per file beside the `master`), and deliver_all finishes them. Use as a context
    manager around everything up to the delivery: leaving it, by any way, kills every ffmpeg not finished and
    removes what it wrote (a failure after the render, before or during the delivery, leaves none running)."""

    def __init__(self, config, master: Path | None):
        self.config, self.master, self.encoders, self.frames = config, master, {}, 0

    def write(self, image: np.ndarray) -> None:
        if self.frames == 0:
            self._start(image.shape[1], image.shape[0])
        for encoder in self.encoders.values():
            encoder.arrived(self.frames, image)
        self.frames += 1

    def _start(self, width: int, height: int) -> None:
        config, options = self.config, self.config.video.options()
        for preset in config.video.platforms():
            delivery = plan(preset, config.frame_count(), config.fps, width, height, options, timed=bool(config.timing))
            self.encoders[preset] = FileEncoder(delivery, _working(self.path(preset)), options.pad, width, height)

    def path(self, preset: str) -> Path:
        return self.master.parent / f"{self.config.name}{PRESETS[preset].suffix}"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for encoder in self.encoders.values():
            encoder.stop()


def deliver_all(config, frames: list[Path], master: Path, live: LiveDeliveries | None = None) -> list[dict]:
    """After the master MP4 (`master`) is written: its music, if the walk is timed to some, and the job's platform
    files beside it, from its published frames (`live`: those started while rendering, finished)."""
    if config.timing:
        mux(master, config.timing, PRESETS["master"].audio_bitrate, PRESETS["master"].audio_rate)
    live = live or LiveDeliveries(config, master)  # none started: every file made from the frames
    return [deliver(preset, frames, config.fps, live.path(preset), config.video.options(), config.timing,
                    live.encoders.get(preset)) for preset in config.video.platforms()]


def export(output: Path, preset: str, out: Path | None = None, overrides: dict | None = None) -> dict:
    """`morph export`: a platform file from a finished walk's frames, nothing rendered; `overrides` (fit, pad,
    loop, hold_ends, reverse; None keeps the job's own) change how the frames are shown."""
    manifest = read_walk(output, "export")
    frames = [output / "frames" / r["file"] for r in manifest["frames"]]
    missing = [f.name for f in frames if not f.is_file()]
    if missing:
        raise MorphError(f"{output}: frames {missing[:5]} are missing; run the job again to restore them")
    saved = VideoOptions(**{k: v for k, v in (manifest["config"].get("video") or {}).items()
                            if k in {f.name for f in fields(VideoOptions)}})
    options = replace(saved, **{k: v for k, v in (overrides or {}).items() if v is not None})
    timing = manifest["config"].get("timing")
    return deliver(preset, frames, manifest["fps"], out or output / f"{manifest['name']}{PRESETS[preset].suffix}",
                   options, SimpleNamespace(**timing) if timing else None)
