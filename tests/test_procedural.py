"""Tests for the offline `local/procedural` image renderer."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from importlib import resources

import pytest
from PIL import Image, ImageChops, ImageStat

from imagegate.providers.procedural import colours_in, render_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _table() -> dict[str, list[int]]:
    text = resources.files("imagegate.providers").joinpath("colours.json").read_text("utf-8")
    return json.loads(text)


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize(
    ("width", "height"), [(256, 256), (512, 512), (1024, 1024), (256, 2048), (1536, 1024)]
)
def test_png_has_exact_size(width: int, height: int) -> None:
    data = render_png("a lighthouse at night", 1, width, height, 0)
    assert data.startswith(PNG_SIGNATURE)
    img = _decode(data)
    assert img.format == "PNG"
    assert img.mode == "RGB"
    assert img.size == (width, height)


def test_rejects_out_of_range_sizes() -> None:
    with pytest.raises(ValueError):
        render_png("x", 1, 255, 512, 0)
    with pytest.raises(ValueError):
        render_png("x", 1, 512, 2049, 0)


def test_deterministic() -> None:
    args = ("a red fox in a blue forest", 42, 768, 512, 3)
    assert render_png(*args) == render_png(*args)


def test_deterministic_across_processes() -> None:
    # Guards against anything depending on per-process str hash randomisation.
    code = (
        "import hashlib; from imagegate.providers.procedural import render_png; "
        "print(hashlib.sha256(render_png('a red fox', 5, 300, 260, 2)).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert digests == {hashlib.sha256(render_png("a red fox", 5, 300, 260, 2)).hexdigest()}


def _mean_abs_diff(a: bytes, b: bytes) -> float:
    diff = ImageChops.difference(_decode(a), _decode(b))
    return sum(ImageStat.Stat(diff).mean) / 3


def test_index_changes_image() -> None:
    first = render_png("a red fox in a blue forest", 7, 512, 512, 0)
    second = render_png("a red fox in a blue forest", 7, 512, 512, 1)
    assert first != second
    # Meaningfully different pixels, not just a few changed bytes.
    assert _mean_abs_diff(first, second) > 10


def test_seed_changes_image() -> None:
    first = render_png("quiet harbour at dawn", 1, 512, 512, 0)
    second = render_png("quiet harbour at dawn", 2, 512, 512, 0)
    assert first != second
    assert _mean_abs_diff(first, second) > 10


def test_colour_words_drive_palette() -> None:
    for seed in range(5):
        red = ImageStat.Stat(_decode(render_png("a red sunset", seed, 512, 512, 0))).mean
        blue = ImageStat.Stat(_decode(render_png("a blue lake", seed, 512, 512, 0))).mean
        # Red image: red channel clearly dominates; blue image: blue channel does.
        assert red[0] > red[2] + 60, red
        assert blue[2] > blue[0] + 60, blue
        assert red[0] > blue[0] + 60
        assert blue[2] > red[2] + 60


def test_no_colour_words_still_colourful_and_prompt_dependent() -> None:
    a = _decode(render_png("quiet harbour at dawn", 1, 256, 256, 0))
    b = _decode(render_png("an old clock tower", 1, 256, 256, 0))
    assert max(ImageStat.Stat(a).stddev) > 5
    assert ImageStat.Stat(a).mean != ImageStat.Stat(b).mean


def test_colours_in_order_dedup_and_case() -> None:
    table = _table()
    red, blue = tuple(table["red"]), tuple(table["blue"])
    assert colours_in("A Red fox, BLUE sky, red") == [red, blue]


def test_colours_in_word_boundaries() -> None:
    assert colours_in("redundant bluetooth tango") == []
    assert colours_in("nothing colourful here") == []
    assert colours_in("grey and gray") == [tuple(_table()["grey"])]


def test_colour_table_is_well_formed() -> None:
    table = _table()
    assert len(table) >= 40
    for name in ("red", "green", "blue", "yellow", "purple", "gray", "grey", "navy", "teal"):
        assert name in table
    for rgb in table.values():
        assert len(rgb) == 3
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)
