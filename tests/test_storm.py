"""The storm map: analytic checks of the measures on synthetic frames, and `morph analyze` on a real render."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from morph.analysis.storm_map import RunningStorms, analyze_frames
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.errors import MorphError
from morph.job import run_job
from morph.analysis.storm import Distance, blinks, downscale, gini, pixel_distance, ssim_distance, storm_zones, summarize
from morph.media.video import write_png
from morph.render.store import FrameStore


def grey(value, size=16):
    return torch.full((size, size, 3), value, dtype=torch.uint8)


def write_frames(folder, values):
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, value in enumerate(values):
        files.append(folder / f"{i:05d}.png")
        write_png(files[-1], grey(value).numpy())
    return files


def test_identical_frames_are_at_distance_zero():
    assert pixel_distance(grey(90), grey(90)) == 0 and ssim_distance(grey(90), grey(90)) == pytest.approx(0)
    assert pixel_distance(grey(0), grey(255)) == 1.0


def test_gini_of_equal_distances_gives_smoothness_one_and_one_jump_gives_almost_zero():
    assert gini(torch.ones(10)) == pytest.approx(0) and summarize(torch.ones(10))["smoothness"] == pytest.approx(1)
    one_jump = torch.tensor([0.0] * 9 + [1.0])
    assert gini(one_jump) == pytest.approx(0.9)  # (n - 1) / n: everything in one of ten steps
    s = summarize(torch.tensor([1.0] * 9 + [10.0]))
    assert s["max_over_median"] == 10 and s["worst_10_percent_share"] == pytest.approx(10 / 19)


def test_one_jump_is_one_storm_zone_in_the_right_place():
    d = torch.tensor([0.01] * 5 + [0.5, 0.4] + [0.01] * 5)
    assert storm_zones(d, 0.03) == [(5, 6)]
    assert storm_zones(torch.tensor([0.5, 0.0, 0.5]), 0.1) == [(0, 0), (2, 2)]


def test_an_a_b_a_frame_is_a_blink_and_a_lasting_change_is_not():
    d = torch.tensor([0.0, 0.5, 0.5, 0.0])  # frames A A B A A
    s = torch.tensor([0.5, 0.0, 0.5])  # A-B, A-A, B-A two apart
    assert blinks(d, s, threshold=0.1) == [2]
    lasting = torch.tensor([0.0, 0.5, 0.0, 0.0])  # A A B B B
    assert blinks(lasting, torch.tensor([0.5, 0.5, 0.0]), threshold=0.1) == []


def test_downscale_keeps_small_frames_and_averages_large_ones():
    assert downscale(grey(7)).shape == (16, 16, 3)
    checker = torch.zeros(256, 256, 3, dtype=torch.uint8)
    checker[::2, ::2] = 255
    small = downscale(checker, 128)
    assert small.shape == (128, 128, 3) and int(small.float().mean().round()) == 64


@pytest.mark.parametrize("shape", [(512, 512), (768, 384), (384, 384), (384, 640), (300, 200), (1000, 700)])
def test_downscale_is_the_mean_of_each_area_whether_or_not_whole_blocks_fit(shape):
    frame = torch.from_numpy(np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8))
    scale = 128 / max(shape)
    areas = torch.nn.functional.interpolate(frame.permute(2, 0, 1)[None].double(), scale_factor=scale, mode="area")
    assert torch.equal(downscale(frame), areas[0].permute(1, 2, 0).round().to(torch.uint8))
    if shape == (512, 512):  # whole 4 x 4 blocks: each pixel their rounded mean
        block = frame[4:8, 8:12].double().mean((0, 1)).round().to(torch.uint8)
        assert torch.equal(downscale(frame)[1, 2], block)


def test_analysis_of_a_synthetic_walk_finds_the_jump_and_the_blink(tmp_path):
    # calm ramp, a jump between frames 5 and 6, then a one-frame blink at frame 9
    values = [100, 101, 102, 103, 104, 105, 200, 201, 202, 20, 203, 204]
    analysis = analyze_frames(write_frames(tmp_path, values), metric="pixel", storm_factor=3.0)
    assert len(analysis.distances) == 11
    assert (5, 5) in analysis.storms and analysis.blinks == [9]
    assert analysis.summary["max_over_median"] > 10


def test_fewer_than_three_frames_and_unknown_metrics_are_one_line(tmp_path):
    with pytest.raises(MorphError, match="needs at least 3 frames"):
        analyze_frames(write_frames(tmp_path, [1, 2]))
    with pytest.raises(MorphError, match="metric: 'mse' is not allowed"):
        analyze_frames(write_frames(tmp_path, [1, 2, 3]), metric="mse")


def test_every_walk_gets_a_storm_map_and_morph_analyze_recomputes_it(write_config):
    config = load_config(write_config(frames=8))
    manifest = run_job(config, quiet=True)
    out = config.output_dir
    assert (out / "storm.png").stat().st_size > 10_000 and (out / "filmstrip.png").exists()
    assert manifest["analysis"]["metric"] == "ssim" and len(manifest["analysis"]["distances"]) == 7
    result = CliRunner().invoke(cli, ["analyze", str(out), "--metric", "pixel"])
    assert result.exit_code == 0, result.output
    assert "smoothness (1 - Gini)" in result.output and "storm zones" in result.output
    assert json.loads((out / "manifest.json").read_text())["analysis"]["metric"] == "pixel"


def test_the_storm_map_measured_as_frames_arrive_equals_the_one_read_back_from_the_pngs(write_config):
    config = load_config(write_config(frames=7, batch_size=2))
    run_job(config, frames="2-4", quiet=True)  # a resumed run: frames 2-4 come from the store, fed in their turn
    # frame 4 is reused inside the batch [4, 5] rendered again: what is measured is its stored pixels, not the batch's
    store = FrameStore(config.output_dir)
    key = store.plan()["keys"][4]
    store.put(key, 255 - store.read(key))
    manifest = run_job(config, quiet=True)
    assert manifest["reused"] == 3
    files = [config.output_dir / "frames" / r["file"] for r in manifest["frames"]]
    after = analyze_frames(files, "ssim", 3.0)
    assert manifest["analysis"]["distances"] == after.distances and len(after.distances) == 6
    assert manifest["analysis"]["threshold"] == after.threshold and manifest["analysis"]["blinks"] == after.blinks


def test_running_storms_measure_nothing_before_the_third_frame(monkeypatch):
    import morph.analysis.storm_map

    monkeypatch.setattr(morph.analysis.storm_map, "distance_function", lambda metric: pytest.fail("loaded"))
    with RunningStorms("lpips") as running:  # a two-frame walk never loads the metric (lpips: its package and weights)
        for value in (1, 2):
            running.write(grey(value).numpy())
    assert running.frames == 2 and running.neighbours == []


def _broken_metric(monkeypatch):
    import morph.analysis.storm_map

    def broken(metric):
        raise MorphError("metric broke")

    monkeypatch.setattr(morph.analysis.storm_map, "distance_function", broken)


def test_an_error_measuring_on_the_storm_maps_thread_is_raised_where_the_frames_are_written(monkeypatch):
    _broken_metric(monkeypatch)
    with pytest.raises(MorphError, match="metric broke"):
        with RunningStorms("pixel", depth=1) as running:
            for value in range(20):  # more than the queue holds: after the failure it is still drained
                running.write(grey(value).numpy())
    assert running.frames < 20  # raised by a write, not only when leaving


def test_leaving_the_storm_map_on_another_error_reports_that_error(monkeypatch):
    _broken_metric(monkeypatch)
    with pytest.raises(ValueError, match="the render failed"):
        with RunningStorms("pixel") as running:
            for value in range(3):
                running.write(grey(value).numpy())
            raise ValueError("the render failed")


def test_the_analysis_waits_for_every_frame_and_no_thread_is_left(monkeypatch):
    import threading
    import time

    import morph.analysis.storm_map

    slow = Distance(pixel_distance.prepare, lambda a, b: time.sleep(0.02) or pixel_distance.between(a, b))
    monkeypatch.setattr(morph.analysis.storm_map, "distance_function", lambda name: slow)
    with RunningStorms("pixel") as running:
        for value in range(12):
            running.write(grey(value).numpy())
        analysis = running.analysis()  # the frames are still being measured when it is asked
        with pytest.raises(RuntimeError, match="after its analysis"):
            running.write(grey(0).numpy())
    assert len(analysis.distances) == 11 and len(running.skips) == 10
    assert not [t for t in threading.enumerate() if t.name == "morph-storm-map"]


def test_a_storm_map_left_on_another_error_measures_no_more_frames(monkeypatch):
    import time

    import morph.analysis.storm_map

    slow = Distance(pixel_distance.prepare, lambda a, b: time.sleep(0.05) or pixel_distance.between(a, b))
    monkeypatch.setattr(morph.analysis.storm_map, "distance_function", lambda name: slow)
    with pytest.raises(ValueError, match="cancelled"):
        with RunningStorms("pixel") as running:
            for value in range(10):  # queued far faster than measured
                running.write(grey(value).numpy())
            raise ValueError("cancelled")
    assert len(running.neighbours) < 9  # all 9 had the queue been measured before leaving


def test_a_storm_map_measured_on_fewer_frames_than_the_walk_has_is_an_internal_error():
    running = RunningStorms("pixel")
    for value in (1, 2, 3):
        running.write(grey(value).numpy())
    assert len(running.analysis(frames=3).distances) == 2
    with pytest.raises(RuntimeError, match="measured 3 frames of a walk of 4"):
        running.analysis(frames=4)


def test_analyze_refuses_a_partial_render(write_config):
    config = load_config(write_config(frames=8))
    run_job(config, frames="0-3", quiet=True)
    result = CliRunner().invoke(cli, ["analyze", str(config.output_dir)])
    assert result.exit_code == 2 and "needs a whole walk" in result.output


def test_lpips_without_the_package_is_refused_before_rendering(write_config):
    try:
        import lpips  # noqa: F401
        pytest.skip("lpips is installed here")
    except ImportError:
        pass
    result = CliRunner().invoke(cli, ["run", str(write_config(analysis={"metric": "lpips"})), "--quiet"])
    assert result.exit_code == 2 and "lpips needs the lpips package" in result.output


def test_the_legend_of_storm_png_hides_neither_curves_nor_keyframe_labels(tmp_path):
    """toy_demo's case: a keyframe ("a blue square") in the middle, where the legend used to sit."""
    from matplotlib import pyplot as plt

    from morph.analysis.storm_map import storm_figure, uniform_curve

    values = [100 + i for i in range(30)] + [200] + [201 + i for i in range(29)]
    analysis = analyze_frames(write_frames(tmp_path, values), metric="pixel", storm_factor=3.0)
    fig = storm_figure(analysis, 20, [(0, "a red circle"), (30, "a blue square"), (59, "a green triangle")],
                       before=uniform_curve(analysis.distances, True))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = fig.axes[0]
    legend = top.get_legend().get_window_extent(renderer)
    labels = [text.get_window_extent(renderer) for text in top.texts]
    assert [text.get_text() for text in top.texts] == ["a red circle", "a blue square", "a green triangle"]
    assert not legend.overlaps(top.get_window_extent(renderer))  # the plotting area: every curve and label
    assert not any(legend.overlaps(label) for label in labels)
    figure = fig.bbox
    assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1  # and it is not cut off
    plt.close(fig)


@pytest.mark.parametrize("metric, distance", [("ssim", ssim_distance), ("pixel", pixel_distance)])
def test_running_storms_prepare_each_frame_once_and_measure_the_same_pairs(metric, distance, monkeypatch):
    import morph.analysis.storm_map

    generator = torch.Generator().manual_seed(3)
    frames = [torch.randint(0, 256, (160, 144, 3), dtype=torch.uint8, generator=generator) for _ in range(6)]
    prepared = []
    counting = Distance(lambda frame: prepared.append(frame) or distance.prepare(frame), distance.between)
    monkeypatch.setattr(morph.analysis.storm_map, "distance_function", lambda name: counting)
    with RunningStorms(metric) as running:
        for frame in frames:
            running.write(frame.numpy())
    assert len(prepared) == len(frames)
    small = [downscale(frame) for frame in frames]
    assert running.neighbours == [distance(a, b) for a, b in zip(small, small[1:])]
    assert running.skips == [distance(a, b) for a, b in zip(small, small[2:])]
    assert len(set(running.neighbours)) == 5  # different pairs: a shifted index could not pass
