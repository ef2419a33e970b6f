"""Grid jobs: rows walked between two prompts, columns adding k times a third."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from morph.config.yaml_file import load_config
from morph.errors import MorphError
from morph.job import prepare_job, run_job
from morph.analysis.sheet import contact_sheet, grid_labels, nice_number
from morph.media.video import read_png

DEFINE = {"cat": "a photo of a cat", "kitten": "a photo of a kitten", "tabby": "tabby"}
GRID = {"rows": {"from": "cat", "to": "kitten", "steps": 2},
        "columns": {"add": "tabby", "from": "-1/2", "to": 1, "steps": 4}}


@pytest.fixture
def grid_config(write_config):
    return load_config(write_config(name="grid", prompts=None, frames=None, define=DEFINE, grid=GRID,
                                    batch_size=1, num_inference_steps=2))


def test_cells_are_row_bases_plus_k_times_the_added_prompt(grid_config):
    job = prepare_job(grid_config)
    path = job.path
    assert len(path) == 8 and path.column_k.tolist() == pytest.approx([-0.5, 0.0, 0.5, 1.0])
    conds = path.conditionings(list(range(8)))
    cat, kitten, tabby = path.start, path.end, path.add
    assert torch.allclose(conds[0], cat - 0.5 * tabby, atol=1e-6)
    assert torch.equal(conds[1], cat)
    assert torch.allclose(conds[7], kitten + tabby, atol=1e-6)
    assert path.describe(6) == {"index": 6, "row": 1, "column": 2, "t": 1.0, "k": 0.5, "file": "r01_c02.png",
                                "expression": "slerp(cat, kitten, t=1) + 0.5 * (tabby)"}


def test_grid_cell_equals_the_walk_frame_with_the_same_conditioning(grid_config, write_config):
    run_job(grid_config, quiet=True)
    walk_config = load_config(write_config(name="walk", define=DEFINE, prompts=["kitten + 1/2 * tabby", "cat"],
                                           frames=2, batch_size=1, num_inference_steps=2))
    run_job(walk_config, quiet=True)
    cell = read_png(grid_config.output_dir / "cells" / "r01_c02.png")
    frame = read_png(walk_config.output_dir / "frames" / "00000.png")
    assert np.array_equal(cell, frame)
    saved = json.loads((grid_config.output_dir / "manifest.json").read_text())
    assert saved["kind"] == "grid" and len(saved["frames"]) == 8 and saved["grid"].endswith("grid.png")
    assert saved["prompts"][2] == {"key": "grid.columns.add", "source": "tabby", "terms": {"tabby": 1.0}}
    sheet = Image.open(grid_config.output_dir / "grid.png")
    assert sheet.width > 4 * 128 and sheet.height > 2 * 128


def test_cells_can_be_selected_like_frames(grid_config):
    manifest = run_job(grid_config, frames="0,7", quiet=True)
    assert manifest["grid"] is None
    assert sorted(p.name for p in (grid_config.output_dir / "cells").iterdir()) == ["r00_c00.png", "r01_c03.png"]


def test_contact_sheet_layout_and_labels(tmp_path):
    colours = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(255, 255, 0), (0, 255, 255), (255, 0, 255)]]
    files = []
    for i, row in enumerate(colours):
        files.append([])
        for j, colour in enumerate(row):
            path = tmp_path / f"{i}{j}.png"
            Image.new("RGB", (64, 64), colour).save(path)
            files[-1].append(path)
    title, rows, columns = grid_labels("cat", "kitten", "tabby", torch.tensor([0.0, 1.0]),
                                       torch.tensor([-3 / 7, 0.0, 3 / 7]))
    assert (rows, columns) == (["t=0", "t=1"], ["k=-3/7", "k=0", "k=3/7"])
    assert title == "rows: cat -> kitten    columns: + k * tabby"
    sheet = np.asarray(contact_sheet(files, title, rows, columns))
    height, width, _ = sheet.shape
    # cells are enlarged to 128 px and packed at the bottom right; labels sit above and to the left
    left, top = width - 3 * 128, height - 2 * 128
    assert left > 0 and top > 0
    assert tuple(sheet[top + 64, left + 64]) == (255, 0, 0)
    assert tuple(sheet[top + 128 + 64, left + 2 * 128 + 64]) == (255, 0, 255)
    label_strip = sheet[:top, left:]  # column labels: dark text on white
    assert (label_strip.min(axis=-1) < 100).sum() > 50
    row_strip = sheet[top:, :left]
    assert (row_strip.min(axis=-1) < 100).sum() > 50


def test_nice_numbers():
    assert [nice_number(x) for x in (3 / 7, -1.0, 0.5, 0.123456)] == ["3/7", "-1", "1/2", "0.123"]


def test_grid_configs_reject_frames_and_need_both_axes(write_config):
    with pytest.raises(MorphError, match="frames: not used by grid jobs"):
        load_config(write_config(prompts=None, define=DEFINE, grid=GRID))
    with pytest.raises(MorphError, match="grid.columns.add: missing"):
        load_config(write_config(prompts=None, frames=None, define=DEFINE,
                                 grid={"rows": GRID["rows"], "columns": {"from": 0, "to": 1, "steps": 2}}))
    with pytest.raises(MorphError, match="exactly one of prompts"):
        load_config(write_config(frames=None, define=DEFINE, grid=GRID))
