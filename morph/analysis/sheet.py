"""The labelled contact sheet of a grid job, assembled from the cell PNGs on disk."""

from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..media.video import read_png

MIN_CELL = 128  # cells are enlarged (nearest neighbour) to at least this many pixels, so labels fit


def nice_number(x: float) -> str:
    """0.42857 -> '3/7', -1.0 -> '-1', 0.123456 -> '0.123': the way a user wrote it, where that is clear."""
    fraction = Fraction(x).limit_denominator(12)
    if abs(float(fraction) - x) < 1e-6:
        return str(fraction)
    return f"{x:.3g}"


def grid_labels(rows_from: str, rows_to: str, add: str, row_t, column_k) -> tuple[str, list[str], list[str]]:
    """The sheet's title, one label per row and one per column."""
    title = f"rows: {rows_from} -> {rows_to}    columns: + k * {add}"
    return title, [f"t={nice_number(float(t))}" for t in row_t], [f"k={nice_number(float(k))}" for k in column_k]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def contact_sheet(cell_files: list[list[Path]], title: str, row_labels: list[str],
                  column_labels: list[str]) -> Image.Image:
    """One image: a title line, column labels on top, row labels at the left, cells [rows][columns] in between."""
    first = read_png(cell_files[0][0])
    height, width = first.shape[:2]
    scale = max(1, -(-MIN_CELL // min(height, width)))
    cell_w, cell_h = width * scale, height * scale
    font = _font(max(12, cell_h // 8))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = int(measure.textbbox((0, 0), "Ag", font=font)[3]) + 8
    left = max(int(measure.textlength(label, font=font)) for label in row_labels) + 16
    top = 2 * line
    sheet_w = max(left + cell_w * len(column_labels), int(measure.textlength(title, font=font)) + 16)
    sheet = Image.new("RGB", (sheet_w, top + cell_h * len(row_labels)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 4), title, fill="black", font=font)
    for j, label in enumerate(column_labels):
        draw.text((left + j * cell_w + cell_w // 2, line + 4), label, fill="black", font=font, anchor="ma")
    for i, label in enumerate(row_labels):
        draw.text((8, top + i * cell_h + cell_h // 2), label, fill="black", font=font, anchor="lm")
        for j in range(len(column_labels)):
            cell = Image.fromarray(read_png(cell_files[i][j])).resize((cell_w, cell_h), Image.NEAREST)
            sheet.paste(cell, (left + j * cell_w, top + i * cell_h))
    return sheet
