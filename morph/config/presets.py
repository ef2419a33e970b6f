"""Delivery presets: what each platform accepts, and the plan of a file that meets it. Pure Python (no torch, no
ffmpeg), so that a config is checked against its presets before any model loads.

The limits are the platforms' published upload specifications, read on 2026-11-26; docs/platforms.md, "Videos for the
platforms", lists them with their sources. Where two published figures disagree, the stricter one is used.
"""

import math
from dataclasses import dataclass, field
from fractions import Fraction

from ..errors import MorphError

VERTICAL = 9 / 16  # width / height of the vertical-first platforms' frame


@dataclass(frozen=True)
class Preset:
    name: str
    container: str  # mp4 (H.264 High, yuv420p), gif, webm (VP9, yuv420p)
    suffix: str  # file name: <name><suffix>
    fps_range: tuple[float, float] = (1, 240)  # frame rates the platform accepts, both included
    fps_allowed: tuple[float, ...] = ()  # or only these
    long_side: int | None = None  # most pixels on the longer side
    short_side: int | None = None  # most pixels on the shorter side
    min_short_side: int | None = None  # fewest pixels on the shorter side (smaller renders are scaled up)
    aspect: tuple[float, float] | None = None  # width / height accepted
    vertical_first: bool = False  # fit: pad / crop aims at 9:16
    duration: tuple[float, float] | None = None  # seconds
    max_bytes: int | None = None
    max_bitrate: int | None = None  # bits per second of video
    audio_bitrate: int = 192_000  # bits per second of AAC music, at most, where the file carries the walk's music
    audio_rate: int = 48_000  # Hz, at most: music sampled faster is resampled to this
    b_frames: int | None = None  # consecutive B-frames the platform asks for (None: the encoder's choice)
    keyframe_s: float | None = None  # seconds between keyframes the platform asks for (None: the encoder's choice)
    notes: str = ""


MB = 1_000_000  # bytes in a megabyte, as the platforms count file sizes
MBIT = 1_000_000  # bits/s in a megabit per second, as they count bitrates
PRESETS = {p.name: p for p in [
    Preset("master", "mp4", ".mp4", notes="the walk itself: frame k of the file is render k"),
    Preset("x", "mp4", ".x.mp4", fps_range=(1, 60), long_side=1280, short_side=1024, min_short_side=32,
           aspect=(1 / 2.39, 2.39), duration=(0.5, 140), max_bytes=512 * MB, max_bitrate=25 * MBIT),
    Preset("instagram", "mp4", ".instagram.mp4", fps_range=(23, 60), long_side=1920, min_short_side=720,
           aspect=(0.01, 10), vertical_first=True, duration=(3, 900), max_bytes=100 * MB, max_bitrate=25 * MBIT,
           audio_bitrate=128_000),
    Preset("tiktok", "mp4", ".tiktok.mp4", fps_allowed=(23.976, 24, 25, 29.97, 30, 50, 60), long_side=4096,
           short_side=2160, min_short_side=720, vertical_first=True, duration=(3, 600), max_bytes=72 * MB),
    # YouTube: "other frame rates are also acceptable", and it asks for the rate the video was made at
    Preset("youtube", "mp4", ".youtube.mp4", long_side=7680, short_side=4320, duration=(0, 12 * 3600), keyframe_s=0.5,
           b_frames=2),
    Preset("youtube-shorts", "mp4", ".youtube-shorts.mp4", long_side=7680, short_side=4320, aspect=(0.01, 1),
           vertical_first=True, duration=(0, 180), keyframe_s=0.5, b_frames=2),
    Preset("gif", "gif", ".gif", fps_range=(1, 50), long_side=480, max_bytes=15 * MB,
           notes="a palette made from the frames; loops forever"),
    Preset("webm", "webm", ".webm", notes="VP9 at a quality that matches the master"),
]}
PRESET_NAMES = tuple(PRESETS)


@dataclass(frozen=True)
class VideoOptions:
    """How the platform files show the walk (the config's video section, or `morph export`'s options)."""

    fit: str = "none"  # none | pad | crop
    pad: str = "black"  # blur, black, white or #RRGGBB
    loop: str = "none"  # none | pingpong
    hold_ends: float = 0.0  # seconds
    reverse: bool = False


@dataclass
class Shape:
    """What the file's frames are made from a render: crop, scale, then pad onto the canvas."""

    width: int  # the file's frame
    height: int
    crop: tuple[int, int, int, int] | None = None  # x, y, width, height cut from the render first
    content: tuple[int, int] = (0, 0)  # the render (after cropping) scaled to this size
    pad: bool = False  # the content is centred on a larger canvas
    notes: list[str] = field(default_factory=list)


@dataclass
class DeliveryPlan:
    preset: Preset
    timeline: list[int]  # the order the rendered frames are shown in (indices into the walk)
    fps: float  # of the file
    repeat: int  # every shown frame is held for this many frames of the file
    shape: Shape

    @property
    def duration(self) -> float:
        return len(self.timeline) * self.repeat / self.fps

    @property
    def frames(self) -> int:
        return len(self.timeline) * self.repeat


def _accepts(preset: Preset, rate: float) -> bool:
    if preset.fps_allowed:
        return any(abs(rate - allowed) < 1e-6 for allowed in preset.fps_allowed)
    return preset.fps_range[0] <= rate <= preset.fps_range[1]


def gif_rate(fps: float) -> Fraction:
    """The rate a GIF shows `fps` at: GIF delays are whole hundredths of a second, so 100 / (the nearest whole
    number of hundredths a frame)."""
    return Fraction(100, max(1, round(100 / fps)))


def container_rate(preset: Preset, fps: int) -> tuple[float, int]:
    """(the file's frame rate, how many times each frame is held): the walk's own rate where the platform accepts
    it, else the highest whole multiple of it that it accepts, so that the cadence stays even. A GIF shows every
    frame for the same whole number of hundredths: the nearest such rate (gif_rate)."""
    if preset.container == "gif" and _accepts(preset, gif_rate(fps)):
        return gif_rate(fps), 1
    if _accepts(preset, fps):
        return fps, 1
    multiples = [k for k in range(2, 241) if _accepts(preset, k * fps)]
    if not multiples:
        accepted = ", ".join(map(str, preset.fps_allowed)) if preset.fps_allowed else \
            f"{preset.fps_range[0]:g}-{preset.fps_range[1]:g}"
        raise MorphError(f"video: {preset.name} accepts {accepted} fps, and no whole multiple of fps: {fps} is "
                         "among them; choose an fps that divides one of those rates")
    return multiples[-1] * fps, multiples[-1]


def timeline(count: int, loop: str = "none", hold_frames: int = 0, reverse: bool = False) -> list[int]:
    """Indices of the walk's frames in showing order: reversed, bounced (forward then back, no frame twice at a
    turn: 0 .. n-1, n-2 .. 1), and the first and last rendered frames held for hold_frames more."""
    order = list(range(count))[::-1] if reverse else list(range(count))
    if loop == "pingpong":
        order = order + order[-2:0:-1]
    ends = {order[0], order[count - 1]}  # the walk's two ends (with pingpong, the start and the turn)
    return [i for i in order for _ in range(1 + (hold_frames if i in ends else 0))]


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def shape(preset: Preset, width: int, height: int, fit: str) -> Shape:
    """The file's frame for a render of width x height: never stretched; fit pad / crop reach the platform's
    aspect (9:16 on vertical-first platforms); scaled into its size limits; even sides (yuv420p needs them)."""
    ratio, notes = width / height, []
    low, high = preset.aspect or (0, math.inf)
    target = VERTICAL if preset.vertical_first else min(max(ratio, low), high)
    crop, canvas = None, (width, height)
    if fit == "none" and not low <= ratio <= high:
        raise MorphError(f"video: {preset.name} accepts width/height from {low:.3g} to {high:.3g}, and the render is "
                         f"{width}x{height} ({ratio:.3g}); set video.fit: pad or crop")
    if fit == "crop" and abs(target - ratio) > 1e-9:
        cw, ch = (round(height * target), height) if target < ratio else (width, round(width / target))
        crop = ((width - cw) // 2, (height - ch) // 2, cw, ch)
        canvas = (cw, ch)
        notes.append(f"cropped to {cw}x{ch} (the centre of the render) for {preset.name}'s {_ratio(target)}")
    elif fit == "pad" and abs(target - ratio) > 1e-9:
        canvas = (width, round(width / target)) if target < ratio else (round(height * target), height)
        notes.append(f"padded to {_ratio(target)}")
    scale = 1.0
    long, short = max(canvas), min(canvas)
    if preset.long_side and long * scale > preset.long_side:
        scale = preset.long_side / long
    if preset.short_side and short * scale > preset.short_side:
        scale = preset.short_side / short
    if preset.min_short_side and short * scale < preset.min_short_side:
        scale = preset.min_short_side / short
        if preset.long_side and long * scale > preset.long_side + 1e-9:  # both limits: only a new aspect would do
            raise MorphError(f"video: {preset.name} needs the short side >= {preset.min_short_side} px and the long "
                             f"side <= {preset.long_side} px, and a {canvas[0]}x{canvas[1]} frame cannot keep its "
                             "aspect within both; set video.fit: pad or crop (9:16), or render nearer that shape")
        notes.append(f"scaled up {scale:.3g}x to {preset.min_short_side} px on the short side, {preset.name}'s least")
    elif scale < 1:
        notes.append(f"scaled down {scale:.3g}x into {preset.name}'s size limit")
    exact = [canvas[0] * scale, canvas[1] * scale]
    if fit != "none" and canvas != (width, height):  # the longer side follows the shorter: the aspect stays exact
        if target < 1:
            exact[1] = exact[0] / target
        else:
            exact[0] = exact[1] * target
    limit = (preset.long_side, preset.short_side) if canvas[0] >= canvas[1] else (preset.short_side, preset.long_side)
    file_w, file_h = (min(_even(x), m - m % 2) if m else _even(x) for x, m in zip(exact, limit))
    if abs(file_w - exact[0]) > 1e-6 or abs(file_h - exact[1]) > 1e-6:
        notes.append(f"rounded to {file_w}x{file_h} (H.264 and VP9 in yuv420p need even sides)")
    content = (file_w, file_h)
    if fit == "pad" and canvas != (width, height):
        content = (min(_even(width * scale), file_w), min(_even(height * scale), file_h))
    return Shape(file_w, file_h, crop, content, pad=content != (file_w, file_h), notes=notes)


def _ratio(target: float) -> str:
    return "9:16" if abs(target - VERTICAL) < 1e-9 else f"{target:.3g}:1"


def plan(preset_name: str, count: int, fps: int, width: int, height: int,
         options: VideoOptions = VideoOptions(), timed: bool = False) -> DeliveryPlan:
    """The file `preset_name` makes of a walk of `count` frames at `fps`, or a MorphError that says what to change
    (`timed`: the walk is timed to music, so its length is timing.duration, not frames)."""
    preset, loop = PRESETS[preset_name], options.loop
    hold = round(options.hold_ends * fps)
    order = timeline(count, loop, hold, options.reverse)
    rate, repeat = container_rate(preset, fps)
    result = DeliveryPlan(preset, order, rate, repeat, shape(preset, width, height, options.fit))
    if rate / repeat != fps:  # a GIF at a rate it cannot show evenly
        result.shape.notes.append(f"shown at {float(rate):.4g} fps, {float(100 / rate):g} hundredths a frame (GIF "
                                  f"delays are whole hundredths of a second), {abs(float(rate) / fps - 1):.0%} "
                                  f"{'faster' if rate > fps else 'slower'} than the walk's {fps} fps")
    if preset.duration:
        low, high = preset.duration
        seconds = len(order) / fps
        if seconds < low - 1e-9:
            raise MorphError(f"video: {preset.name} needs at least {low:g} s, and this video is {seconds:.2f} s "
                             f"({len(order)} frames at {fps} fps); {_longer(count, fps, low, loop, hold, timed)}")
        if seconds > high + 1e-9:
            raise MorphError(f"video: {preset.name} takes at most {high:g} s, and this video is {seconds:.1f} s; "
                             f"render fewer frames (at most {int(high * fps)} at {fps} fps), or drop "
                             "video.loop / video.hold_ends")
    return result


def _longer(count: int, fps: int, seconds: float, loop: str, hold: int, timed: bool = False) -> str:
    """Ways to reach `seconds`: more frames (with music: more of it), holding the ends, or bouncing."""
    missing = math.ceil(seconds * fps - 1e-9) - len(timeline(count, loop, hold))
    more = math.ceil(missing / 2) if loop == "pingpong" else missing  # bouncing shows a new frame twice
    longer = f"set timing.duration: {(count + more) / fps:g}" if timed else f"render at least {count + more} frames"
    ways = [longer, f"set video.hold_ends: {(hold + math.ceil(missing / 2)) / fps:g}"]
    if loop != "pingpong" and len(timeline(count, "pingpong", hold)) >= seconds * fps - 1e-9:
        ways.append("set video.loop: pingpong")
    return ", or ".join(ways)
