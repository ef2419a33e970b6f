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


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (`apt-get install chromium`; .ci/run does it)")
def test_a_picture_chosen_in_the_browser_lands_in_inputs_and_in_its_keyframes_cells(tmp_path, monkeypatch):
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from studio_tour import CHROMIUM_ARGS

    from morph.studio.page import serve

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    Image.new("RGB", (64, 64), (20, 160, 40)).save(tmp_path / "green.png")
    studio, url = serve(root, port=None, block=False, warm=False)
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=BROWSER, args=CHROMIUM_ARGS)
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector('#keyframes [data-testid="cell-1-0"]')
            page.locator("#upload_keyframe input").fill("1")
            page.locator("#upload_keyframe input").press("Tab")
            page.set_input_files("#upload input[type=file]", str(tmp_path / "green.png"))
            page.wait_for_function("() => document.querySelector('#yaml .cm-content').innerText.includes('inputs/')",
                                   timeout=60_000)
            text = page.locator("#yaml .cm-content").inner_text()
            page.wait_for_function("() => document.querySelector('#keyframes [data-testid=\"cell-1-4\"]')"
                                   ".innerText.includes('inputs/green-')", timeout=60_000)
            chromium.close()
    finally:
        studio.close()
    kept = list((root / "inputs").iterdir())
    assert [p.name[:6] for p in kept] == ["green-"] and f"image: ../inputs/{kept[0].name}" in text
    assert errors == []
