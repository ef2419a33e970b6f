"""A tour of morph studio in a real browser (Debian's chromium, driven by Playwright; nothing is downloaded): type two
prompts into the keyframe table, preview, render, reload, and take a screenshot of the page.

    python docs/studio_tour.py docs/images/studio.png     # the README's screenshot, from a studio on a new folder

tests/test_studio_browser.py runs the same tour and checks what it saw.
"""

import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PROMPTS = ("a blue square", "a red circle")
FRAMES = 24
WAIT_MS = 180_000
SCREENSHOT_WIDTH = 900  # pixels: the README's picture, small enough to commit
# whether a label of the page lies over the picture in the element with this id (a title line starts at its corner)
LABEL_OVER = """id => { const picture = document.querySelector(`#${id} img`).getBoundingClientRect();
    return [...document.querySelectorAll(`#${id} [data-testid="block-label"]`)].some(label => {
        const b = label.getBoundingClientRect();
        return b.width > 0 && b.left < picture.right && b.right > picture.left && b.top < picture.bottom
            && b.bottom > picture.top; }); }"""


def tour(url: str, screenshot: Path, browser: str = CHROMIUM) -> dict:
    """Drive the studio at `url`; return what the page showed: the YAML the form wrote, the preview filmstrip's
    natural width and whether a label covers it, the video's duration (before and after a reload) and the browser's
    console errors."""
    from playwright.sync_api import sync_playwright

    seen = {"console": []}
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: seen["console"].append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: seen["console"].append(str(e)))
        page.goto(url)
        page.wait_for_selector('#keyframes [data-testid="cell-0-0"]')
        for row, prompt in enumerate(PROMPTS):  # a double click edits a cell; Enter ends the edit
            cell = page.locator(f'#keyframes [data-testid="cell-{row}-0"]')
            cell.dblclick()
            # The editor opens a moment after the double click: keys sent before it lands went to the cell and the
            # prompt was appended to the old text ('a green trianglea red circle'). fill() waits for it and replaces.
            editor = cell.locator("textarea")
            editor.fill(prompt)
            editor.press("Enter")
        frames = page.locator("#frames input")
        frames.fill(str(FRAMES))
        frames.press("Tab")
        page.wait_for_function(f"() => document.querySelector('#yaml .cm-content').innerText.includes('{PROMPTS[1]}')"
                               f" && document.querySelector('#yaml .cm-content').innerText.includes('{FRAMES}')")
        seen["yaml"] = page.locator("#yaml .cm-content").inner_text()
        page.click("#preview")
        seen["filmstrip_width"] = page.wait_for_function(
            "() => { const i = document.querySelector('#filmstrip img'); return i && i.complete && i.naturalWidth; }",
            timeout=WAIT_MS).json_value()
        seen["label_over_filmstrip"] = page.evaluate(LABEL_OVER, "filmstrip")
        page.click("#render")
        duration = "() => { const v = document.querySelector('#video video'); return v && v.duration > 0 && v.duration; }"
        seen["duration"] = page.wait_for_function(duration, timeout=WAIT_MS).json_value()
        seen["status"] = page.locator("#status").inner_text()
        time.sleep(1)  # the storm map and the preset buttons appear with the video
        _small_png(page.screenshot(full_page=True), screenshot)
        page.reload()  # the finished job is still there: its state is its output folder
        seen["duration_after_reload"] = page.wait_for_function(duration, timeout=WAIT_MS).json_value()
        chromium.close()
    return seen


def _small_png(data: bytes, path: Path) -> None:
    """The screenshot scaled to SCREENSHOT_WIDTH and reduced to a palette of 128 colours."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((SCREENSHOT_WIDTH, round(image.height * SCREENSHOT_WIDTH / image.width)), Image.LANCZOS)
    image.quantize(128).save(path, optimize=True)


def main(screenshot: str) -> None:
    from morph.studio.page import serve

    with tempfile.TemporaryDirectory() as root:
        studio, url = serve(Path(root), port=None, block=False)  # the first free port from 7860
        try:
            seen = tour(url, Path(screenshot))
        finally:
            studio.close()
    print(f"{screenshot}: filmstrip {seen['filmstrip_width']} px wide, video {seen['duration']:.2f} s, "
          f"console errors {seen['console'] or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1])
