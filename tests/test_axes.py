"""Further axes of a walk: keyframes with their own seed, negative prompt and guidance, walked with the prompts."""

import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_job
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.prompts.encode import prompt_encoder
from morph.job import run_job
from morph.prompts.ops import slerp_noise
from morph.models.pipeline import load_model
from morph.prompts.latent import shared_latent
from morph.render.batch import RenderSettings, render_batch
from morph.media.video import read_png

TOY = {"model": "toy", "height": None, "width": None, "num_inference_steps": 10, "guidance_scale": 5.0,
       "batch_size": 3}


def ffmpeg_info(path):
    """What ffmpeg says about a file's streams (its stderr for `ffmpeg -i`)."""
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True).stderr


def run(tmp_path, name, **keys):
    manifest = run_job(load_config(tiny_job(tmp_path, name, **{**TOY, **keys})), quiet=True)
    return manifest, [read_png(tmp_path / "out" / name / "frames" / r["file"]) for r in manifest["frames"]]


def test_slerped_noise_keeps_a_gaussians_statistics_and_the_keyframes_own_noise():
    a, b = (torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    walk = slerp_noise(a.expand(11, -1, -1, -1), b.expand(11, -1, -1, -1), t)
    assert all(abs(float(x.std()) - 1) < 0.02 for x in walk)
    assert torch.equal(walk[0], a[0]) and torch.equal(walk[-1], b[0])
    lerped = 0.5 * (a + b)
    assert float(lerped.std()) < 0.75  # what lerp would do mid-way: a grey, washed-out frame


def test_a_seed_walks_end_frames_are_the_plain_renders_of_those_seeds(tmp_path):
    walk, frames = run(tmp_path, "walk", prompts=[{"prompt": "a red circle", "seed": 1},
                                                  {"prompt": "a red circle", "seed": 2}], frames=6)
    _, one = run(tmp_path, "one", prompts=["a red circle", "a red circle"], seed=1, frames=6)
    _, two = run(tmp_path, "two", prompts=["a red circle", "a red circle"], seed=2, frames=6)
    assert np.array_equal(frames[0], one[0]) and np.array_equal(frames[-1], two[-1])  # bit-identical on the CPU
    assert not np.array_equal(frames[2], one[2]) and not np.array_equal(frames[2], two[2])
    assert walk["frames"][2]["seeds"] == [1, 2] and walk["frames"][2]["t"] == pytest.approx(0.4)


def test_per_frame_guidance_in_one_batch_is_each_frame_rendered_alone():
    pipe = load_model("toy", torch.device("cpu"), torch.float32, None, False).pipe
    encoder = prompt_encoder(pipe)
    conds = torch.stack([encoder.text("a red circle")] * 3)
    latent, guidance = shared_latent(pipe, 0, 64, 64), torch.tensor([2.0, 5.0, 9.0], dtype=torch.float64)
    settings = RenderSettings(64, 64, 10, 5.0, 0)
    together = render_batch(pipe, conds, encoder.negative(""), latent, settings, guidance=guidance).images
    for i, g in enumerate(guidance.tolist()):
        alone = render_batch(pipe, conds[i:i + 1], encoder.negative(""), latent, RenderSettings(64, 64, 10, g, 0))
        assert (together[i].int() - alone.images[0].int()).abs().max() <= 2  # batch noise only
    assert not torch.equal(together[0], together[2])
    same = render_batch(pipe, conds, encoder.negative(""), latent, settings, guidance=torch.full((3,), 5.0)).images
    stock = render_batch(pipe, conds, encoder.negative(""), latent, settings).images
    assert torch.equal(same, stock)  # constant guidance takes the stock path untouched


def test_interpolated_negatives_change_the_middle_frame(tmp_path):
    prompts = ["a red circle", "a red circle"]
    _, plain = run(tmp_path, "plain", prompts=prompts, frames=5)
    walk, negated = run(tmp_path, "negated", prompts=["a red circle", {"prompt": "a red circle",
                                                                       "negative_prompt": "a red circle"}], frames=5)
    assert np.array_equal(plain[0], negated[0]) and not np.array_equal(plain[2], negated[2])
    assert walk["frames"][2]["negative_prompts"] == [{}, {"a red circle": 1.0}]


def test_keyframe_guidance_walks_linearly_and_selected_frames_match_the_full_run(tmp_path):
    keys = {"prompts": [{"prompt": "a red circle", "guidance_scale": 3}, {"prompt": "a blue square", "seed": 4,
                                                                         "guidance_scale": 7}], "frames": 5}
    full, frames = run(tmp_path, "full", **keys)
    assert [r["guidance_scale"] for r in full["frames"]] == [3, 4, 5, 6, 7]
    config = load_config(tiny_job(tmp_path, "some", **{**TOY, **keys}))
    run_job(config, frames="2", quiet=True)
    assert np.array_equal(read_png(config.output_dir / "frames" / "00002.png"), frames[2])


def test_mixed_guidance_at_or_below_one_is_one_line(tmp_path):
    path = tiny_job(tmp_path, prompts=[{"prompt": "a cat", "guidance_scale": 1}, {"prompt": "a dog",
                                                                                   "guidance_scale": 5}])
    result = CliRunner().invoke(cli, ["run", str(path), "--quiet"])
    assert result.exit_code == 2 and "need every one above 1" in result.output


def clicks(path, seconds=3.0, at=(1.0, 2.0), rate=22050):
    """A WAV of silence with a short 1 kHz click at each time in `at`, written with the standard library."""
    import math
    import struct
    import wave

    samples = [0.0] * int(seconds * rate)
    for start in at:
        for i in range(int(0.03 * rate)):
            samples[int(start * rate) + i] = 0.8 * math.sin(2 * math.pi * 1000 * i / rate) * math.exp(-i / (0.005 * rate))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", int(x * 32767)) for x in samples))
    return path


def test_a_walk_timed_to_clicks_moves_most_on_the_clicks_and_carries_the_music(tmp_path):
    from morph.output.delivery import probe

    audio = clicks(tmp_path / "clicks.wav")
    config = load_config(tiny_job(tmp_path, "music", frames=None, timing={"audio": str(audio), "duration": 3}))
    manifest = run_job(config, quiet=True)
    t = np.array([r["t"] for r in manifest["frames"]])
    assert len(t) == 60 and t[0] == 0 and t[-1] == 1 and (np.diff(t) > 0).all()
    biggest = set(np.argsort(np.diff(t))[-4:].tolist())
    assert biggest <= {19, 20, 21, 39, 40, 41}  # the steps around 1 s and 2 s (frames 20 and 40 at 20 fps)
    assert np.diff(t)[:15].max() < 0.01  # stillness before the first click
    info = ffmpeg_info(manifest["video"])
    assert "Audio: aac" in info and probe(config.output_dir / "music.mp4")["frames"] == 60
    assert "Duration: 00:00:03.0" in info


def test_timing_shares_the_frames_by_a_frames_list_and_refuses_what_does_not_fit(tmp_path):
    audio = clicks(tmp_path / "clicks.wav")
    config = load_config(tiny_job(tmp_path, prompts=["a", "b", "c"], frames=[1, 3],
                                  timing={"audio": str(audio), "duration": 2.05}))
    assert config.frame_count() == 41 and config.steps() == [10, 30]
    for keys, expected in [({"frames": 50}, "frame count is timing.duration x fps"),
                           ({"model": "no/such-model", "timing": {"audio": "missing.wav", "duration": 2}},
                            "is not a file")]:
        path = tiny_job(tmp_path, **{"timing": {"audio": str(audio), "duration": 2}, "frames": None, **keys})
        result = CliRunner().invoke(cli, ["run", str(path), "--quiet"])
        assert result.exit_code == 2 and expected in result.output, result.output


def test_even_spacing_then_music_puts_the_biggest_measured_changes_on_the_clicks(tmp_path):
    audio = clicks(tmp_path / "clicks.wav")
    manifest, _ = run(tmp_path, "both", prompts=["a red circle", "a blue square"], seed=3, batch_size=8, frames=None,
                      spacing="even", timing={"audio": str(audio), "duration": 3})
    d = np.array(manifest["analysis"]["distances"])  # measured on the video's frames
    uniform = np.array(manifest["spacing"]["uniform"]["distances"])
    near = list(range(18, 22)) + list(range(38, 42))
    assert set(np.argsort(d)[-2:].tolist()) <= set(near)
    assert d[near].sum() / d.sum() > 3 * uniform[near].sum() / uniform.sum()
    assert len(d) == 59 and manifest["spacing"]["extra_renders"] <= 30


def test_music_with_a_walk_wide_spacing_budget_is_one_line(tmp_path):
    audio = clicks(tmp_path / "clicks.wav")
    path = tiny_job(tmp_path, frames=None, spacing={"mode": "even", "budget": "walk"},
                    timing={"audio": str(audio), "duration": 2})
    result = CliRunner().invoke(cli, ["run", str(path), "--quiet"])
    assert result.exit_code == 2 and "use budget: segment with timing" in result.output


def test_the_seed_walk_example_runs_and_its_goldens_check(tmp_path):
    from pathlib import Path

    from morph.golden import check_golden, save_golden

    example = Path(__file__).parent.parent / "configs" / "seed_walk.yaml"
    config = load_config(example, output=str(tmp_path / "out"), device="cpu")
    manifest = run_job(config, frames="0,20,30", quiet=True)
    assert [r["seeds"] for r in manifest["frames"]] == [[1, 2], [1, 2], [2, 3]]
    save_golden(config, [0, 30], tmp_path / "golden")
    assert check_golden(config, tmp_path / "golden", "exact", report_dir=tmp_path / "report").passed


def test_platform_files_of_a_timed_walk_carry_the_music_unless_held_or_bounced(tmp_path):
    from pathlib import Path

    from morph.output.delivery import export

    audio = clicks(tmp_path / "clicks.wav", seconds=3.2)
    config = load_config(tiny_job(tmp_path, "timed", frames=None, video={"presets": ["tiktok", "gif"]},
                                  timing={"audio": str(audio), "duration": 3.2}))
    made = {d["preset"]: d for d in run_job(config, quiet=True)["deliveries"]}
    from morph.output.delivery import probe

    assert made["tiktok"]["audio"] and not made["gif"]["audio"]
    assert probe(Path(made["tiktok"]["file"]))["frames"] == 3 * 64  # the music took no frame away
    held = export(config.output_dir, "x", tmp_path / "held.mp4", {"hold_ends": 0.5})
    master = export(config.output_dir, "master", tmp_path / "master.mp4")
    assert not held["audio"] and master["audio"]
    info = ffmpeg_info(made["tiktok"]["file"])
    assert "Audio: aac" in info and "60 fps" in info


def test_music_without_a_duration_runs_for_the_rest_of_the_track(tmp_path):
    audio = clicks(tmp_path / "clicks.wav", seconds=3.0)
    config = load_config(tiny_job(tmp_path, frames=None, timing={"audio": str(audio), "start": 0.5}))
    assert config.timing.duration == pytest.approx(2.5) and config.frame_count() == 50
    assert config.to_dict()["timing"]["duration"] == pytest.approx(2.5)  # the manifest records what was used


def test_an_hour_long_track_without_a_duration_is_refused_with_the_fix(tmp_path):
    import wave

    with wave.open(str(tmp_path / "long.wav"), "wb") as track:  # 3700 s of silence, cheaply: 1 kHz, 8 bits
        track.setnchannels(1)
        track.setsampwidth(1)
        track.setframerate(1000)
        track.writeframes(b"\x80" * 3_700_000)
    result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, frames=None,
                                                          timing={"audio": str(tmp_path / "long.wav")}))])
    assert result.exit_code == 2 and "runs 3700 s after timing.start" in result.output
    assert "set timing.duration" in result.output
    config = load_config(tiny_job(tmp_path, frames=None, timing={"audio": str(tmp_path / "long.wav"), "duration": 4}))
    assert config.frame_count() == 80
