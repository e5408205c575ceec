"""Offline image generator behind the ``local/procedural`` model.

Renders a deterministic abstract picture - a rotated two-colour gradient, a soft glow and
seeded translucent ellipses, polygons and lines - whose palette comes from colour words in
the prompt, and returns it as PNG bytes. Only Pillow primitives are used, at a reduced
working resolution that is upscaled at the end, so a 1024x1024 image costs tens of ms.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import json
import math
import random
import re
from importlib import resources
from typing import Protocol

from PIL import Image, ImageDraw, ImageFilter, ImageOps

RGB = tuple[int, int, int]


class Writable(Protocol):
    """Where an encoded picture goes, as Pillow's encoder produces it."""

    def write(self, data: bytes, /) -> object: ...


# Longest side of the canvas for the blurred layers (background, glow, soft shapes). They
# have no fine detail, so drawing and blurring them small and upscaling once is much cheaper
# than working at full size and looks the same; only the crisp shapes are drawn full size.
_SOFT_SIDE = 256
# PNG encoding is over half the render time. Measured at 1024x1024: level 3 costs ~2 ms more
# than level 1 for ~17% smaller files; level 4 adds ~5 ms, and the default (6) ~25 ms for
# little further saving. Level 3 is the knee of that curve.
_COMPRESS_LEVEL = 3
_MIN_SIDE, _MAX_SIDE = 256, 2048


@functools.cache
def _colour_table() -> dict[str, RGB]:
    text = resources.files("imagegate.providers").joinpath("colours.json").read_text("utf-8")
    return {name.lower(): (r, g, b) for name, (r, g, b) in json.loads(text).items()}


@functools.cache
def _colour_pattern() -> re.Pattern[str]:
    # Longest names first; \b on both sides stops "gold" matching inside "golden".
    names = sorted(_colour_table(), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)


def colours_in(prompt: str) -> list[RGB]:
    """Colours named in ``prompt``, in order of first appearance, without duplicates."""
    table = _colour_table()
    found: list[RGB] = []
    for match in _colour_pattern().finditer(prompt):
        rgb = table[match.group(1).lower()]
        if rgb not in found:
            found.append(rgb)
    return found


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _palette(prompt: str) -> list[RGB]:
    named = colours_in(prompt)[:6]
    if named:
        # Named colours twice (so they dominate random picks) plus tints and shades for depth.
        tints = [_mix(c, (255, 255, 255), 0.3) for c in named]
        shades = [_mix(c, (0, 0, 0), 0.3) for c in named]
        return named * 2 + tints + shades
    # No colour words: an analogous + complementary scheme around a hue taken from the
    # prompt's hash, so one prompt keeps its palette across seeds and indices.
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    hue = digest[0] / 256
    palette: list[RGB] = []
    for i, offset in enumerate((0.0, 0.07, 0.14, 0.5, 0.57)):
        sat = 0.35 + digest[i + 1] / 255 * 0.5
        val = 0.45 + digest[i + 6] / 255 * 0.5
        r, g, b = colorsys.hsv_to_rgb((hue + offset) % 1.0, sat, val)
        palette.append((round(r * 255), round(g * 255), round(b * 255)))
    return palette


def _rng(prompt: str, seed: int, width: int, height: int, index: int) -> random.Random:
    # sha256, not hash(): str hashing is randomised per process and we need stable output.
    key = f"{seed}\x1f{width}\x1f{height}\x1f{index}\x1f{prompt}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest(), "big"))


def _background(rng: random.Random, palette: list[RGB], size: tuple[int, int]) -> Image.Image:
    first, second, third = rng.sample(palette, 3)
    # Rotate a larger ramp and keep its centre, so no empty corners appear at any angle.
    ramp = Image.linear_gradient("L").resize((512, 512))
    ramp = ramp.rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR).crop((128, 128, 384, 384))
    mask = ImageOps.autocontrast(ramp).resize(size, Image.Resampling.BILINEAR)
    img = Image.composite(Image.new("RGB", size, first), Image.new("RGB", size, second), mask)
    # A soft glow of a third colour at a seeded spot.
    w, h = size
    glow_side = round(max(w, h) * rng.uniform(0.6, 1.2))
    strength = rng.uniform(0.4, 0.8)
    glow = ImageOps.invert(Image.radial_gradient("L")).resize((glow_side, glow_side))
    glow = glow.point(lambda v: round(v * strength))
    glow_mask = Image.new("L", size, 0)
    centre = (rng.uniform(0, w), rng.uniform(0, h))
    glow_mask.paste(glow, (round(centre[0] - glow_side / 2), round(centre[1] - glow_side / 2)))
    return Image.composite(Image.new("RGB", size, third), img, glow_mask)


def _shapes(
    rng: random.Random,
    img: Image.Image,
    palette: list[RGB],
    count: int,
    alpha: tuple[int, int],
    scale: tuple[float, float],
) -> None:
    draw = ImageDraw.Draw(img, "RGBA")  # RGBA drawing mode blends translucent fills
    w, h = img.size
    unit = math.sqrt(w * h)  # shape sizes follow the area, so tall/wide images look alike
    for _ in range(count):
        fill = (*rng.choice(palette), rng.randint(*alpha))
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        r = rng.uniform(*scale) * unit
        kind = rng.random()
        if kind < 0.45:
            rx, ry = r * rng.uniform(0.5, 1.5), r * rng.uniform(0.5, 1.5)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=fill)
        elif kind < 0.8:
            angles = sorted(rng.uniform(0, math.tau) for _ in range(rng.randint(3, 6)))
            points = [(x + r * math.cos(a), y + r * math.sin(a)) for a in angles]
            draw.polygon(points, fill=fill)
        else:
            a = rng.uniform(0, math.tau)
            end = (x + 2 * r * math.cos(a), y + 2 * r * math.sin(a))
            draw.line([(x, y), end], fill=fill, width=max(1, round(r * rng.uniform(0.03, 0.12))))


def render_png(prompt: str, seed: int, width: int, height: int, index: int) -> bytes:
    """PNG bytes of an RGB picture of exactly ``width`` x ``height`` for this prompt.

    The same arguments always give byte-identical output; ``seed`` and ``index`` (the
    position of the image within one request) each change the composition.
    """
    return encode_png(render(prompt, seed, width, height, index))


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    write_png(img, buf)
    return buf.getvalue()


def write_png(img: Image.Image, out: Writable) -> None:
    """`img` as PNG into `out`, a block at a time (never the whole encoding at once)."""
    img.save(out, format="PNG", compress_level=_COMPRESS_LEVEL)


def render(prompt: str, seed: int, width: int, height: int, index: int) -> Image.Image:
    """The picture `render_png` encodes."""
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise ValueError(f"size {width}x{height} outside {_MIN_SIDE}..{_MAX_SIDE}")
    rng = _rng(prompt, seed, width, height, index)
    palette = _palette(prompt)
    factor = _SOFT_SIDE / max(width, height)
    soft_size = (max(8, round(width * factor)), max(8, round(height * factor)))

    # Large shapes blurred into the background at low resolution, upscaled once (bilinear is
    # enough for blurred content), then a few crisp shapes on top at full size for depth.
    img = _background(rng, palette, soft_size)
    _shapes(rng, img, palette, rng.randint(10, 18), (50, 140), (0.08, 0.3))
    img = img.filter(ImageFilter.GaussianBlur(_SOFT_SIDE * rng.uniform(0.006, 0.014)))
    img = img.resize((width, height), Image.Resampling.BILINEAR)
    _shapes(rng, img, palette, rng.randint(4, 9), (120, 220), (0.03, 0.12))
    return img


def _render_any_size(prompt: str, seed: int, size: tuple[int, int], index: int) -> Image.Image:
    """A render of exactly `size`, also outside the 256..2048 a render is made at."""
    width, height = (min(max(side, _MIN_SIDE), _MAX_SIDE) for side in size)
    img = render(prompt, seed, width, height, index)
    return img if img.size == size else img.resize(size, Image.Resampling.BILINEAR)


def edit_image(prompt: str, seed: int, base: bytes, mask: bytes | None, index: int) -> Image.Image:
    """An edit of `base`: the mask's fully transparent pixels are repainted from the prompt
    and every other pixel keeps its exact value. Without a mask the whole picture is
    blended half and half with a render of the prompt. Deterministic, like `render_png`.
    """
    with Image.open(io.BytesIO(base)) as opened:
        original = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
    painted = _render_any_size(prompt, seed, original.size, index).convert(original.mode)
    if mask is None:
        return Image.blend(original, painted, 0.5)
    with Image.open(io.BytesIO(mask)) as opened:
        alpha = opened.convert("RGBA").getchannel("A")
    # 255 where the mask is fully transparent (edit there), 0 elsewhere (keep).
    where = alpha.point(lambda a: 255 if a == 0 else 0)
    return Image.composite(painted, original, where)


def progressive(final: Image.Image, step: int, steps: int) -> Image.Image:
    """Partial image `step` (0-based) of `steps` before `final`: the final picture in
    coarse blocks that get finer with each step, as a progressive render shows it."""
    block = 2 ** (steps - step + 2)  # 3 steps: 32, 16, 8 pixel blocks
    small = final.resize(
        (max(1, final.width // block), max(1, final.height // block)), Image.Resampling.BOX
    )
    return small.resize(final.size, Image.Resampling.NEAREST)


def write_gif(
    prompt: str,
    seed: int,
    width: int,
    height: int,
    index: int,
    frames: int,
    duration_ms: int,
    out: Writable,
) -> None:
    """An animated GIF into `out`, as it is encoded: `frames` renders of the prompt
    (each its own composition)."""
    pictures = [
        render(prompt, seed, width, height, index * 100 + frame).quantize(128)
        for frame in range(frames)
    ]
    pictures[0].save(
        out, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0
    )


def render_svg(prompt: str, seed: int, width: int, height: int, index: int) -> bytes:
    """A vector picture: a two-colour gradient and seeded translucent ellipses. Only
    shapes and colours go into the markup (never the prompt's text)."""
    rng = _rng(prompt, seed, width, height, index)
    palette = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in _palette(prompt)]
    first, second = rng.sample(palette, 2)
    shapes = []
    for _ in range(rng.randint(8, 16)):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
        shapes.append(
            f'<ellipse cx="{cx:.1f}" cy="{cy:.1f}" rx="{rx:.1f}" ry="{ry:.1f}" '
            f'fill="{rng.choice(palette)}" fill-opacity="{rng.uniform(0.3, 0.8):.2f}"/>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
        f'<defs><linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="{first}"/><stop offset="1" stop-color="{second}"/>'
        f"</linearGradient></defs>"
        f'<rect width="{width}" height="{height}" fill="url(#bg)"/>' + "".join(shapes) + "</svg>"
    )
    return svg.encode()
