"""Platform files: rates, order and geometry planned exactly; files read back against the presets (= the docs)."""

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import morph.job
import morph.output.delivery
from conftest import tiny_job
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.output.delivery import FileEncoder, export, probe
from morph.errors import MorphError
from morph.job import run_job
from morph.config.presets import PRESETS, VideoOptions, container_rate, plan, shape, timeline
from morph.media.video import read_png

PLATFORMS_PAGE = (Path(__file__).parent.parent / "docs" / "platforms.md").read_text()


def decoded(path):
    frames = imageio_ffmpeg.read_frames(str(path))
    width, height = next(frames)["size"]
    return [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in frames]


def psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / mse) if mse else np.inf


# --- the plan: pure arithmetic ---

def test_the_walk_keeps_its_rate_or_is_held_a_whole_number_of_times():
    assert container_rate(PRESETS["x"], 20) == (20, 1)  # X takes up to 60 fps
    assert container_rate(PRESETS["tiktok"], 20) == (60, 3)
    assert container_rate(PRESETS["instagram"], 20) == (60, 3)
    assert container_rate(PRESETS["youtube"], 20) == (20, 1)  # "other frame rates are also acceptable"
    assert container_rate(PRESETS["tiktok"], 25) == (25, 1)
    assert container_rate(PRESETS["instagram"], 15) == (60, 4)
    assert container_rate(PRESETS["gif"], 20) == (20, 1)
    assert container_rate(PRESETS["tiktok"], 12) == (60, 5)
    with pytest.raises(MorphError, match="no whole multiple of fps: 7"):
        container_rate(PRESETS["tiktok"], 7)


def test_pingpong_bounces_without_showing_a_frame_twice_at_a_turn():
    assert timeline(5, "pingpong") == [0, 1, 2, 3, 4, 3, 2, 1]  # and then the loop starts again at 0
    assert timeline(5, "none", reverse=True) == [4, 3, 2, 1, 0]
    assert timeline(3, "none", hold_frames=2) == [0, 0, 0, 1, 2, 2, 2]
    assert timeline(3, "pingpong", hold_frames=1) == [0, 0, 1, 2, 2, 1]


def test_pad_and_crop_keep_the_render_unstretched_at_nine_to_sixteen():
    padded = shape(PRESETS["tiktok"], 512, 512, "pad")
    assert (padded.width, padded.height, padded.content, padded.crop) == (720, 1280, (720, 720), None)
    cropped = shape(PRESETS["tiktok"], 512, 512, "crop")
    assert cropped.crop == (112, 0, 288, 512) and (cropped.width, cropped.height) == (720, 1280)
    assert 288 / 512 == 720 / 1280 == 9 / 16
    square = shape(PRESETS["tiktok"], 512, 512, "none")  # stays square, scaled to TikTok's least 720 px
    assert (square.width, square.height) == (720, 720)
    odd = shape(PRESETS["youtube-shorts"], 64, 64, "pad")
    assert (odd.width, odd.height) == (64, 114) and any("rounded to 64x114" in n for n in odd.notes)
    assert odd.width % 2 == 0 and odd.height % 2 == 0
    with pytest.raises(MorphError, match="set video.fit: pad or crop"):
        shape(PRESETS["x"], 1024, 256, "none")  # 4:1 is wider than X takes


def test_a_walk_shorter_than_the_platform_takes_is_refused_with_fixes_that_work():
    with pytest.raises(MorphError) as refused:
        plan("tiktok", 30, 20, 64, 64)
    message = str(refused.value)
    assert "needs at least 3 s" in message and "1.50 s" in message
    frames = int(re.search(r"render at least (\d+) frames", message).group(1))
    hold = float(re.search(r"video.hold_ends: ([\d.]+)", message).group(1))
    assert plan("tiktok", frames, 20, 64, 64).duration >= 3
    assert plan("tiktok", 30, 20, 64, 64, VideoOptions(hold_ends=hold)).duration >= 3
    assert "pingpong" in str(pytest.raises(MorphError, plan, "tiktok", 40, 20, 64, 64).value)
    assert plan("tiktok", 40, 20, 64, 64, VideoOptions(loop="pingpong")).duration >= 3


def test_the_docs_table_is_the_presets():
    for p in PRESETS.values():
        fps = "/".join(f"{r:g}" for r in p.fps_allowed) if p.fps_allowed else f"{p.fps_range[0]:g}–{p.fps_range[1]:g}"
        row = f"| `{p.name}` | {p.container} | {fps} |"
        assert row in PLATFORMS_PAGE, row


# --- files from a render ---

@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """A toy walk of 8 frames (each visibly different) with a file for every platform preset (padded with a blurred
    copy where the platform is vertical-first, the ends held 1.5 s)."""
    folder = tmp_path_factory.mktemp("delivery")
    config = load_config(tiny_job(folder, "walk", model="toy", prompts=["a red circle", "a blue square"], frames=8,
                                  num_inference_steps=10, height=None, width=None, video={
        "presets": ["x", "instagram", "tiktok", "youtube", "youtube-shorts", "gif", "webm"], "fit": "pad",
        "pad": "blur", "hold_ends": 1.5}))
    manifest = run_job(config, quiet=True)
    frames = [read_png(config.output_dir / "frames" / r["file"]) for r in manifest["frames"]]
    return config.output_dir, manifest, frames


def test_every_file_reads_back_within_its_preset(walk):
    out, manifest, _ = walk
    made = {d["preset"]: d for d in manifest["deliveries"]}
    assert sorted(made) == ["gif", "instagram", "tiktok", "webm", "x", "youtube", "youtube-shorts"]
    shown = 8 + 2 * 30  # 1.5 s held at each end, at 20 fps
    for name, d in made.items():
        preset, found = PRESETS[name], probe(Path(d["file"]))
        assert found == {k: d[k] for k in found}  # what the run recorded is what the file holds
        assert Path(d["file"]).name == f"walk{preset.suffix}"
        assert found["frames"] == shown * d["repeat"]
        assert found["duration"] == pytest.approx(shown / 20, abs=0.02)
        if preset.duration:
            assert preset.duration[0] <= found["duration"] <= preset.duration[1]
        if preset.fps_allowed:
            assert found["fps"] in preset.fps_allowed
        else:
            assert preset.fps_range[0] <= found["fps"] <= preset.fps_range[1]
        assert found["width"] % 2 == 0 and found["height"] % 2 == 0
        if preset.long_side:
            assert max(found["width"], found["height"]) <= preset.long_side
        if preset.min_short_side:
            assert min(found["width"], found["height"]) >= preset.min_short_side
        if preset.max_bytes:
            assert found["bytes"] <= preset.max_bytes
        if preset.container == "mp4":
            assert (found["codec"], found["profile"], found["pix_fmt"]) == ("h264", "High", "yuv420p")
            assert found["level"] <= 4.2
    assert (made["webm"]["codec"], made["webm"]["pix_fmt"]) == ("vp9", "yuv420p")
    assert made["gif"]["codec"] == "gif"
    assert (made["tiktok"]["width"], made["tiktok"]["height"]) == (720, 1280)  # padded to 9:16
    assert (made["x"]["width"], made["x"]["height"]) == (64, 64)  # X takes a square: nothing to pad
    assert (made["instagram"]["width"], made["instagram"]["height"]) == (720, 1280)
    assert (made["youtube-shorts"]["width"], made["youtube-shorts"]["height"]) == (64, 114)  # 9:16, even sides
    master = probe(out / "walk.mp4")  # the master: the walk itself, frame k = render k
    assert (master["codec"], master["profile"], master["pix_fmt"], master["fps"], master["frames"]) == \
        ("h264", "High", "yuv420p", 20.0, 8)


def test_sixty_fps_holds_every_render_exactly_three_times(walk):
    out, manifest, _ = walk
    frames = decoded(out / "walk.tiktok.mp4")
    groups = [frames[3 * k:3 * k + 3] for k in range(len(frames) // 3)]
    assert len(frames) == 3 * len(groups)
    assert all(np.array_equal(g[0], g[1]) and np.array_equal(g[0], g[2]) for g in groups)
    firsts = [g[0] for g in groups]
    changes = [not np.array_equal(a, b) for a, b in zip(firsts, firsts[1:])]
    assert changes == [False] * 30 + [True] * 7 + [False] * 30  # held start, the 8 renders, held end


def test_padding_keeps_the_render_whole_and_centred(walk):
    out, _, frames = walk
    first = decoded(out / "walk.tiktok.mp4")[0]
    middle = first[280:1000]  # the 720 x 720 render, between 280 px of blurred copy above and below
    scaled = np.asarray(Image.fromarray(frames[0]).resize((720, 720)))
    assert psnr(middle, scaled) > 20 and psnr(first[:280], scaled[:280]) < psnr(middle, scaled)


def test_the_files_show_the_renders_in_order(walk):
    out, _, frames = walk
    shown = decoded(out / "walk.x.mp4")  # X takes 20 fps: one file frame per shown frame
    nearest = [int(np.argmax([psnr(s, f) for f in frames])) for s in shown]
    assert nearest == [0] * 31 + list(range(1, 7)) + [7] * 31


def test_webm_quality_matches_the_master(walk):
    out, _, frames = walk
    master = np.mean([psnr(a, b) for a, b in zip(decoded(out / "walk.mp4"), frames)])
    webm = decoded(out / "walk.webm")
    webm = np.mean([psnr(a, b) for a, b in zip(webm[30:38], frames)])  # after the held first frame
    assert webm > master - 3, (webm, master)


def test_export_renders_nothing_and_bounces(walk, monkeypatch):
    out, _, frames = walk
    import morph.models.pipeline

    monkeypatch.setattr(morph.models.pipeline, "load_model", lambda *a, **k: pytest.fail("export loaded a model"))
    stored = sorted(p.name for p in (out / ".store").iterdir())
    result = CliRunner().invoke(cli, ["export", str(out), "--preset", "gif", "--loop", "pingpong", "--hold-ends", "0",
                                      "--out", str(out / "bounce.gif")])
    assert result.exit_code == 0, result.output
    assert "bounce.gif: 64x64, 20 fps" in result.output
    assert sorted(p.name for p in (out / ".store").iterdir()) == stored
    shown = decoded(out / "bounce.gif")
    nearest = [int(np.argmax([psnr(s, f) for f in frames])) for s in shown]
    assert nearest == [0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1]


def test_a_gif_over_its_limit_is_made_smaller_or_refused(walk, monkeypatch, tmp_path):
    out, _, _ = walk
    full = export(out, "gif", tmp_path / "full.gif", {"hold_ends": 0})["bytes"]
    monkeypatch.setitem(PRESETS, "gif", replace(PRESETS["gif"], max_bytes=int(full * 0.8)))
    smaller = export(out, "gif", tmp_path / "smaller.gif", {"hold_ends": 0})
    assert smaller["width"] < 64 and any("smaller" in n for n in smaller["notes"])
    monkeypatch.setitem(PRESETS, "gif", replace(PRESETS["gif"], max_bytes=100))
    with pytest.raises(MorphError, match="would break gif's limits"):
        export(out, "gif", tmp_path / "never.gif", {"hold_ends": 0})
    assert not (tmp_path / "never.gif").exists()


def test_a_too_short_walk_is_refused_before_any_model_loads(tmp_path):
    path = tiny_job(tmp_path, model="no/such-model", frames=6, video={"preset": "tiktok"})
    result = CliRunner().invoke(cli, ["run", str(path), "--quiet"])
    assert result.exit_code == 2 and "tiktok needs at least 3 s" in result.output
    assert "render at least 60 frames" in result.output and "hold_ends" in result.output


def test_video_options_without_a_platform_and_two_preset_keys_are_one_line(tmp_path):
    for video, expected in [({"loop": "pingpong"}, "add a preset"), ({"preset": "gif", "presets": ["x"]}, "not both"),
                            ({"preset": "vimeo"}, "video.preset")]:
        result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, video=video)), "--quiet"])
        assert result.exit_code == 2 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_the_manifest_and_the_report_list_the_files(walk):
    out, manifest, _ = walk
    assert json.loads((out / "manifest.json").read_text())["deliveries"] == manifest["deliveries"]
    page = (out / "report.html").read_text()
    assert all(f'href="walk{PRESETS[p].suffix}"' in page for p in ("x", "tiktok", "youtube", "gif", "webm"))


@pytest.mark.parametrize("frames, video", [(6, {"loop": "pingpong"}), (10, {"reverse": True})])
def test_files_encoded_while_rendering_show_what_files_made_afterwards_show(write_config, tmp_path, monkeypatch,
                                                                          frames, video):
    # the walk forwards is fed as it renders; a bounce back, or a reversed walk, is read from the frames at the end.
    # Both show 10 frames: X's shortest half second
    config = load_config(write_config(frames=frames, batch_size=2, video={"presets": ["x", "gif"], **video}))
    read = []
    monkeypatch.setattr(morph.output.delivery, "read_png", lambda path: read.append(path) or read_png(path))
    manifest = run_job(config, quiet=True)
    assert len(read) == 2 * (4 if "loop" in video else 9)  # each file: the bounce's 4, or all but the last frame
    monkeypatch.undo()
    for preset in ("x", "gif"):
        made = Path(next(d["file"] for d in manifest["deliveries"] if d["preset"] == preset))
        after = export(config.output_dir, preset, tmp_path / f"after{PRESETS[preset].suffix}")
        shown = decoded(made)
        assert len(shown) == 10 and probe(made)["frames"] == after["frames"]
        assert all(np.array_equal(a, b) for a, b in zip(shown, decoded(Path(after["file"]))))


def ffmpeg_children() -> set[int]:
    """This process's children running ffmpeg, or ended but not waited for (Linux's /proc), by pid."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except OSError:  # ended meanwhile
            continue
        if "ffmpeg" in name and int(rest.split()[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.rglob("*") if ".partial" in p.name or ".making" in p.name or p.name == ".staging"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts child processes in /proc")
def test_a_failure_after_the_render_kills_the_platform_files_ffmpegs_and_leaves_no_partial_file(write_config,
                                                                                                  monkeypatch):
    config = load_config(write_config(frames=10, batch_size=2, video={"presets": ["x", "gif"]}))
    before = ffmpeg_children()

    def fails(*args):
        raise MorphError("publish failed (injected)")

    monkeypatch.setattr(morph.job, "publish", fails)  # after every frame was fed to the files' ffmpegs
    with pytest.raises(MorphError, match="injected"):
        run_job(config, quiet=True)
    assert ffmpeg_children() - before == set() and leftovers(config.output_dir) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts child processes in /proc")
def test_an_ffmpeg_that_dies_while_rendering_stops_the_run_and_every_other_ffmpeg(write_config, monkeypatch):
    config = load_config(write_config(frames=10, batch_size=2, video={"presets": ["x", "gif"]}))
    before, arrived = ffmpeg_children(), FileEncoder.arrived

    def dies(encoder, index, image):
        if index == 3 and encoder.delivery.preset.name == "x":
            encoder._process.kill()
            encoder._process.wait()
        arrived(encoder, index, image)

    monkeypatch.setattr(FileEncoder, "arrived", dies)
    with pytest.raises(MorphError, match="ffmpeg could not write "):
        run_job(config, quiet=True)
    assert ffmpeg_children() - before == set() and leftovers(config.output_dir) == []
