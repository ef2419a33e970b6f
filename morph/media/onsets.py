"""Timing a walk to music: onset strength of an audio signal, and frames placed so that the picture changes
most where the music does. Imports only numpy.

A walk of F frames at `fps` covers F / fps seconds of audio; frame k shows video time k / fps.
"""

import numpy as np

WINDOW = 1024  # samples per spectrum (46 ms at 22050 Hz)
HOP = 256  # samples between spectra (12 ms)
FLOOR = 0.05  # share of each segment's steps spread evenly, so that quiet passages still move a little


def onset_strength(signal, rate):
    """Spectral flux of a mono signal [N] at `rate` Hz: ([M] strength, [M] times in s), one per hop."""
    signal = np.asarray(signal, dtype=np.float64)
    if signal.size < WINDOW:
        signal = np.pad(signal, (0, WINDOW - signal.size))
    frames = np.lib.stride_tricks.sliding_window_view(signal, WINDOW)[::HOP] * np.hanning(WINDOW)
    spectrum = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))  # compressed, as the ear hears loudness
    flux = np.maximum(np.diff(spectrum, axis=0), 0).sum(axis=1)
    times = (np.arange(1, len(spectrum)) * HOP + WINDOW / 2) / rate
    return flux, times


def per_frame(strength, times, frames, fps):
    """Onset strength gathered into the F - 1 steps between frames [F]: [F - 1] (step k: video time k/fps to
    (k + 1)/fps)."""
    step = np.clip((times * fps).astype(int), 0, frames - 2)
    return np.bincount(step, weights=strength, minlength=frames - 1)[:frames - 1]


def placed_t(step_strength, steps):
    """t [F] in each segment (0 at its first frame, 1 at its last) for segments of `steps` [S] whose steps
    have strengths step_strength [F - 1]: t advances in proportion to the strength (plus FLOOR evenly).
    Returns (segment [F], t [F]) as the walk numbers frames: frame 0 at t 0, a keyframe at t 1 of its segment."""
    segment, t, first = [0], [0.0], 0
    for s, n in enumerate(steps):
        strength = np.asarray(step_strength[first:first + n], dtype=np.float64)
        total = strength.sum()
        share = strength / total if total > 0 else np.full(n, 1 / n)
        share = (1 - FLOOR) * share + FLOOR / n
        cumulative = np.cumsum(share)
        cumulative[-1] = 1.0  # the keyframe exactly
        segment += [s] * n
        t += cumulative.tolist()
        first += n
    return np.array(segment), np.array(t)
