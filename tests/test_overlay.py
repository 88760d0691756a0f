"""Label colouring, overlays, grid figures and Markdown reports."""

from __future__ import annotations

import numpy as np
import pytest

from weakseg.report.markdown import Section, image_link, markdown_table, render_report, write_report
from weakseg.report.overlay import colorize_label, heatmap_overlay, mask_overlay, tile


def _image(h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3)).astype(np.uint8)


def test_colorize_label_palette():
    label = np.array([[0, 1, 15], [255, 1, 0]], dtype=np.uint8)
    rgb = colorize_label(label)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [128, 0, 0]  # aeroplane red
    assert rgb[0, 2].tolist() == [192, 128, 128]  # person
    assert rgb[1, 0].tolist() == [224, 224, 192]  # void cream
    assert rgb[0, 0].tolist() == [0, 0, 0]


def test_heatmap_overlay():
    image = _image()
    cam = np.linspace(0, 1, 12 * 16).reshape(12, 16)
    out = heatmap_overlay(image, cam)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(heatmap_overlay(image, cam, alpha=0.0), image)
    full = heatmap_overlay(image, np.zeros((12, 16)), alpha=1.0)
    assert full[0, 0].tolist() == [0, 0, 127]  # jet at 0 is dark blue
    assert heatmap_overlay(image, cam, cmap="viridis").shape == image.shape
    with pytest.raises(ValueError):
        heatmap_overlay(image, np.zeros((3, 3)))


def test_mask_overlay():
    image = _image()
    label = np.zeros((12, 16), np.uint8)
    label[2:5, 3:9] = 1
    label[8, :] = 255
    np.testing.assert_array_equal(mask_overlay(image, label, alpha=0.0), image)
    out = mask_overlay(image, label, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out[label == 1] == [128, 0, 0]).all() and (out[label == 255] == [224, 224, 192]).all()
    np.testing.assert_array_equal(out[label == 0], image[label == 0])  # background untouched
    half = mask_overlay(image, label)
    expected = np.rint(0.5 * image[3, 4].astype(float) + 0.5 * np.array([128, 0, 0])).astype(np.uint8)
    np.testing.assert_array_equal(half[3, 4], expected)


def test_tile_layout_and_captions():
    a, b = _image(12, 16), _image(10, 20)
    grey = np.full((12, 8), 100, np.uint8)
    grid = tile([[a, b], [grey]], pad=2)
    # columns take their widest cell, rows their tallest: width 2+16+2+20+2, height 2+12+2+12+2
    assert grid.shape == (30, 42, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[2:14, 2:18], a)
    assert (grid[0, :] == 255).all()  # padding is white
    assert (grid[16:28, 2:10] == 100).all()

    headed = tile([[a, b], [a, b]], captions=["image", "CAM"], pad=2)
    assert headed.shape[1] == 42 and headed.shape[0] > 2 + 12 + 2 + 12 + 2
    top = headed[: headed.shape[0] - 30]
    assert (top < 128).any()  # caption text drawn in black above the grid
    np.testing.assert_array_equal(headed[-14:-2, 2:18], a)

    per_cell = tile([[a, b]], captions=[["image", "a very long caption that will not fit"]], pad=2)
    assert per_cell.shape[0] > 16 and (per_cell[: per_cell.shape[0] - 14] < 128).any()
    with pytest.raises(ValueError):
        tile([])
    with pytest.raises(ValueError):
        tile([[np.zeros((4, 4), np.float32)]])


def test_markdown_report(tmp_path):
    table = [{"method": "CAM", "mIoU": 0.48123, "note": "a|b"}, {"method": "CAM+CRF", "mIoU": float("nan")}]
    md = markdown_table(table)
    lines = md.strip().split("\n")
    assert lines[0] == "| method | mIoU | note |"
    assert lines[2] == "| CAM | 0.481 | a\\|b |"
    assert lines[3] == "| CAM+CRF | – |  |"

    report = tmp_path / "out" / "report.md"
    fig = tmp_path / "out" / "figs" / "grid 1.png"
    assert image_link(fig, report, "grid") == "![grid](figs/grid%201.png)"
    assert image_link(tmp_path / "other.png", report) == "![](../other.png)"

    sections = [Section("Seeds", text="Best threshold 0.25.", tables=[table], images=[(fig, "grid")])]
    path = write_report(report, "Run 1", sections)
    text = path.read_text()
    assert text == render_report(report, "Run 1", sections)
    assert text.startswith("# Run 1\n") and "## Seeds" in text and "| CAM | 0.481 |" in text
    assert "![grid](figs/grid%201.png)" in text
    assert sorted(p.name for p in report.parent.iterdir()) == ["report.md"]  # no temp files left
