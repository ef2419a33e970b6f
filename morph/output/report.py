"""report.html: one self-contained page per walk, for a person to open. Nothing is fetched from the network:
the video and the pictures are relative links to the files beside it, the styles are inline, there is no script.
Also `morph analyze`: the storm map and the report of an existing render, again."""

import json
from html import escape
from pathlib import Path

from ..analysis.storm_map import Analysis, analyze_frames, keyframes_of, measure_name, storm_map, uniform_curve
from .delivery import summary
from ..files import read_walk, write_atomic
from .manifest import write_manifest

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 2em; }
.sub { color: #666; margin-top: 0; } video, img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: .25em .8em .25em 0; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #444; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 13px; }
"""


def _rows(pairs) -> str:
    return "\n".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in pairs)


def _summary(analysis: dict) -> str:
    s = analysis["summary"]
    ratio = f"{s['max_over_median']:.1f}" if s["max_over_median"] else "inf (median change is 0)"
    return _rows([
        ("measure of change", measure_name(analysis["metric"])),
        ("smoothness (1 - Gini; 1 = every step changes the picture equally)", f"{s['smoothness']:.3f}"),
        ("largest change / median change", ratio),
        ("share of all change in the worst 10 % of steps", f"{100 * s['worst_10_percent_share']:.0f} %"),
        ("storm zones (steps between frames)", ", ".join(f"{a}-{b + 1}" for a, b in analysis["storms"]) or "none"),
        ("blinks (frames that jump away and back)", ", ".join(map(str, analysis["blinks"])) or "none"),
    ])


def _spacing(spacing: dict | None) -> str:
    """Even spacing against the uniform walk of the same frame count, when the walk was re-spaced."""
    if not spacing:
        return ""

    def figures(summary: dict | None) -> str:
        if not summary:
            return "–"
        ratio = f"{summary['max_over_median']:.1f}" if summary["max_over_median"] else "inf"
        return f"smoothness {summary['smoothness']:.3f}, max/median {ratio}"

    uniform, even = spacing["uniform"], spacing["even"]
    jumps = "; ".join(f"segment {d['segment']}, t {d['from_t']:.6f} → {d['to_t']:.6f} (change {d['change']:.3g})"
                      for d in spacing["discontinuities"]) or "none"
    rows = _rows([
        ("uniform spacing (grey in the plot" + (", estimated: not rendered)" if uniform.get("estimated") else ")"),
         figures(uniform["summary"])),
        ("even spacing (this video)", figures(even["summary"])),
        ("uniform, steps across discontinuities left out", figures(uniform["summary_without_discontinuities"])),
        ("even, steps across discontinuities left out", figures(even["summary_without_discontinuities"])),
        ("renders: frames + extra (most extra allowed)",
         f"{spacing['renders'] - spacing['extra_renders']} + {spacing['extra_renders']} "
         f"({spacing['max_extra_renders']}), budget per {spacing['budget']}"),
        ("how change grows with distance (change ≈ distance^p)",
         f"p = {spacing['growth']:.2f}" if "growth" in spacing else "–"),
        ("discontinuities (no spacing can spread them)", jumps),
    ])
    title = f"Even spacing (change measured as {measure_name(spacing['metric'])})"
    return f"<h2>{escape(title)}</h2>\n<table>{rows}</table>\n"


def _deliveries(deliveries: list[dict] | None) -> str:
    """Links to the platform files beside the report, with what each holds."""
    if not deliveries:
        return ""
    items = "\n".join(f'<li><a href="{escape(Path(d["file"]).name)}">{escape(Path(d["file"]).name)}</a>: '
                      f'{escape(d["preset"])}, {escape(summary(d))}</li>' for d in deliveries)
    return f"<h2>Files for the platforms</h2>\n<ul>{items}</ul>\n"


def _attribution(records: list[dict] | None) -> str:
    """Per explained step, a bar per group of rows (its share of the step's change) beside the group's render."""
    if not records:
        return ""
    parts = ["<h2>Why it jumped</h2>\n<p>Each step's change, attributed to the rows of the prompt tensor that moved: "
             "frame i rendered with only that group's rows at frame i + 1's values, its change over the step's "
             "(<code>morph explain</code>).</p>"]
    for record in records:
        rows = []
        for group in sorted(record["groups"], key=lambda g: -abs(g["share"])):
            width = min(100.0, 100 * abs(group["share"]))
            picture = (f'<img src="{escape(group["file"])}" alt="{escape(group["label"])} moved" width="96" '
                       'style="image-rendering: pixelated">' if group.get("file") else "")
            rows.append(f'<tr><th>{escape(group["label"])}</th><td>{group["share"]:.3f}</td><td style="width: 320px">'
                        f'<div style="background: #4a7; height: 1em; width: {width:.1f}%"></div></td>'
                        f'<td>{picture}</td></tr>')
        rows.append(f'<tr><th>remainder</th><td>{record["remainder"]:.3f}</td><td></td><td></td></tr>')
        parts.append(f"<h3>Frames {record['step']} → {record['step'] + 1}</h3>\n<table>{''.join(rows)}</table>")
    return "\n".join(parts) + "\n"


def write_report(output: Path, manifest: dict) -> Path:
    """Write `output`/report.html for the run described by `manifest` (a walk with its analysis) and return it."""
    analysis = manifest["analysis"]
    name = escape(manifest["name"])
    video = Path(manifest["video"]).name if manifest.get("video") else None
    prompts = " → ".join(escape(p["source"]) for p in manifest["prompts"])
    environment = [("model", manifest["model"]["name"]), ("device", f"{manifest['device']} ({manifest['device_name']})"),
                   ("dtype", manifest["dtype"]), ("scheduler", manifest["scheduler"]),
                   ("batch size", manifest["batch_size"]), ("frames rendered / reused",
                                                           f"{manifest['rendered']} / {manifest['reused']}"),
                   *((f"{lib} version", v) for lib, v in manifest["versions"].items() if v),
                   *((f"time: {k}", v) for k, v in manifest["timings"].items())]
    shown = max(manifest["width"], 384)  # small renders are enlarged, pixel for pixel
    player = (f'<video src="{escape(video)}" controls loop muted playsinline width="{shown}" '
              f'style="image-rendering: pixelated"></video>' if video else "<p>No video.</p>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>morph: {name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>{name}</h1>
<p class="sub">{prompts} · {manifest['frame_count']} frames at {manifest['fps']} fps, seed {manifest['seed']},
{manifest['width']} × {manifest['height']} px. Every frame is a real render; none is blended.</p>
{player}
<h2>Where the picture changes</h2>
<img src="storm.png" alt="change between neighbouring frames against video time, storm zones shaded">
<table>{_summary(analysis)}</table>
{_spacing(manifest.get("spacing"))}{_deliveries(manifest.get("deliveries"))}<h2>The biggest jumps</h2>
<img src="filmstrip.png" alt="frames around the biggest jumps">
{_attribution(analysis.get("attribution"))}<h2>The job</h2>
<pre>{escape(json.dumps(manifest['config'], indent=2))}</pre>
<h2>Where it was rendered</h2>
<table>{_rows(environment)}</table>
</body></html>
"""
    path = output / "report.html"
    write_atomic(path, lambda partial: partial.write_text(page, encoding="utf-8"))
    return path


def reanalyze(output: Path, metric: str | None, storm_factor: float | None) -> tuple[Analysis, dict | None]:
    """The storm map of the walk rendered in `output`, from its PNG frames, written beside it with a new report; and
    the analysis it replaced when that one's attribution was dropped (measured with another metric), else None."""
    manifest = read_walk(output, "a storm map")
    settings = manifest["config"].get("analysis") or {}
    metric = metric or settings.get("metric", "ssim")
    spacing = manifest.get("spacing")
    uniform = spacing["uniform"] if spacing and spacing["metric"] == metric else None  # comparable only
    before = uniform_curve(uniform["distances"], uniform.get("estimated", False)) if uniform else None
    files = [output / "frames" / r["file"] for r in manifest["frames"]]
    analysis = storm_map(output, files, manifest["fps"],
                         keyframes_of(manifest["frames"], [p["source"] for p in manifest["prompts"]]),
                         analyze_frames(files, metric, storm_factor or settings.get("storm_factor", 3.0)), before)
    # explain's attribution stays while its shares are of the distances measured now: of the same metric's
    old = manifest.get("analysis") or {}
    kept = old.get("attribution") if old.get("metric") == metric else None
    manifest["analysis"] = {**analysis.to_dict(), "attribution": kept}
    manifest["report"] = str(write_report(output, manifest))
    write_manifest(output, manifest)
    return analysis, old if old.get("attribution") and kept is None else None
