"""morph studio in a real browser: Debian's chromium, headless, driven by Playwright (nothing downloaded): two prompts
typed into the keyframe table, Preview shows the filmstrip, Render shows a video of the right length, a reload still
shows it, and the page logs no console errors. The same tour (docs/studio_tour.py) remakes the README's screenshot."""

import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "docs"))
from studio_tour import FRAMES, PROMPTS, SCREENSHOT_WIDTH, tour  # noqa: E402 (docs/ is not a package)

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytest.importorskip("playwright", reason="playwright is not installed (the test extra has it)")
pytest.importorskip("gradio", reason="morph[studio] is not installed")


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (`apt-get install chromium`; .ci/run does it)")
def test_the_page_composes_previews_and_renders_in_a_browser(tmp_path, monkeypatch):
    from morph.studio.page import serve

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    monkeypatch.chdir(tmp_path)  # put back after: serve() makes the root the current folder
    root = tmp_path / "root"
    root.mkdir()
    studio, url = serve(root, port=None, block=False, warm=False)
    try:
        seen = tour(url, tmp_path / "studio.png", BROWSER)
    finally:
        studio.close()
    assert f"- {PROMPTS[0]}\n- {PROMPTS[1]}" in seen["yaml"] and f"frames: {FRAMES}" in seen["yaml"]
    assert seen["filmstrip_width"] > 0
    assert seen["label_over_filmstrip"] is False  # its title line starts at the corner a label would cover
    assert seen["duration"] == pytest.approx(FRAMES / 20, abs=0.01)  # every frame a render, at 20 fps
    assert seen["duration_after_reload"] == pytest.approx(FRAMES / 20, abs=0.01)
    assert "done" in seen["status"]
    assert seen["console"] == []
    assert iio.imread(tmp_path / "studio.png").shape[1] == SCREENSHOT_WIDTH
