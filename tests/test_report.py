"""report.html: self-contained, and checked in a real headless browser (Debian's chromium) when one is installed."""

import json
import re
import shutil
import subprocess

import pytest

from morph.config.yaml_file import load_config
from morph.job import run_job

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import tiny_job

    root = tmp_path_factory.mktemp("report")
    config = load_config(tiny_job(root, "walk", frames=12))
    manifest = run_job(config, quiet=True)
    return config.output_dir, manifest


def test_every_walk_writes_a_self_contained_report(report):
    out, manifest = report
    page = (out / "report.html").read_text()
    assert manifest["report"] == str(out / "report.html")
    assert re.findall(r'src="([^"]+)"', page) == ["walk.mp4", "storm.png", "filmstrip.png"]  # beside the page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # nothing fetched
    assert "smoothness" in page and "a photo of a cat → a drawing of a dog in kyoto" in page
    assert "&quot;num_inference_steps&quot;: 3" in page  # the resolved config, escaped


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (`apt-get install chromium`; .ci/run does it)")
def test_the_report_loads_in_a_browser_with_its_video_and_plot(report):
    out, manifest = report
    # a probe page beside the report opens it in a frame and writes what the browser sees into its own DOM
    probe = out / "probe.html"
    probe.write_text("""<!doctype html><html><body><pre id="seen">waiting</pre>
<iframe id="report" src="report.html" width="1200" height="900"></iframe>
<script>
const frame = document.getElementById("report");
frame.addEventListener("load", () => {
  const page = frame.contentDocument, video = page.querySelector("video");
  const look = () => { document.getElementById("seen").textContent = JSON.stringify({
      duration: video.duration, plot_width: page.querySelector('img[src="storm.png"]').naturalWidth,
      strip_width: page.querySelector('img[src="filmstrip.png"]').naturalWidth}); };
  if (video.readyState >= 1) look(); else video.addEventListener("loadedmetadata", look);
});
</script></body></html>""")
    run = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    seen = json.loads(re.search(r'<pre id="seen">(.*?)</pre>', run.stdout).group(1))
    assert seen["duration"] == pytest.approx(12 / 20, abs=0.01)  # 12 frames at 20 fps
    assert seen["plot_width"] > 0 and seen["strip_width"] > 0
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "report.html" in line], console  # no errors or warnings from the page
