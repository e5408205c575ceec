"""Images sent to be edited: typed from their bytes, measured, and checked against the
model's catalog entry before anything is stored or any provider is paid."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from imagegate.errors import InvalidInput
from imagegate.providers import ModelSpec
from imagegate.providers.base import EditFiles, InputImage

# The leading bytes of each raster type an edit takes; the client's Content-Type and
# file name are never trusted.
SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("png", b"\x89PNG\r\n\x1a\n", 0),
    ("jpeg", b"\xff\xd8\xff", 0),
    ("webp", b"WEBP", 8),  # "RIFF" <size> "WEBP"
    ("gif", b"GIF8", 0),
)
# Decoding a small file that claims a huge canvas is refused (a decompression bomb).
MAX_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart request, as received."""

    field: str  # "image", "image[]", "mask" or "markup"
    filename: str
    data: bytes


def sniff(data: bytes) -> str | None:
    """ "png", "jpeg", "webp" or "gif" from the bytes themselves, else None."""
    for name, magic, offset in SIGNATURES:
        if data[offset : offset + len(magic)] == magic and (name != "webp" or data[:4] == b"RIFF"):
            return name
    return None


def _fail(field: str, message: str) -> InvalidInput:
    return InvalidInput(["body", field], message)


def _open(upload: Upload, allowed: tuple[str, ...], what: str) -> tuple[InputImage, bool]:
    """The upload as an InputImage, and whether it has an alpha channel."""
    kind = sniff(upload.data)
    if kind is None or kind not in allowed:
        found = f"a {kind.upper()} file" if kind else "not an image we can read"
        raise _fail(upload.field, f"{what} {upload.filename!r} is {found}; send {_names(allowed)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ValueError("too many pixels")
                img.load()  # a truncated or corrupt file fails here, not at the provider
                alpha = img.mode in ("RGBA", "LA", "PA") or (
                    img.mode == "P" and "transparency" in img.info
                )
    except Exception as exc:
        raise _fail(upload.field, f"{what} {upload.filename!r} is not a valid {kind}") from exc
    image = InputImage(upload.data, f"image/{kind}", width, height, upload.filename)
    return image, alpha


def _names(formats: tuple[str, ...]) -> str:
    return ", ".join(f.upper() for f in formats)


def check_edit_inputs(spec: ModelSpec, uploads: list[Upload], *, max_total_bytes: int) -> EditFiles:
    """The images to edit, the mask and the markup, or a clear InvalidInput (a 400)."""
    images = [u for u in uploads if u.field in ("image", "image[]")]
    masks = [u for u in uploads if u.field == "mask"]
    markups = [u for u in uploads if u.field == "markup"]
    if not images:
        raise _fail("image", "an edit needs at least one image (the `image` field)")
    if len(images) > spec.max_input_images:
        raise _fail("image", f"{spec.name} edits at most {spec.max_input_images} images at once")
    if len(masks) > 1:
        raise _fail("mask", "send at most one mask")
    if markups and "markup" not in spec.params:
        raise _fail("markup", f"{spec.name} does not take markup")
    if markups and masks:
        raise _fail("markup", "send a mask or markup, not both")
    if len(markups) > 1:
        raise _fail("markup", "send at most one markup image")
    total = sum(len(u.data) for u in uploads)
    if total > max_total_bytes:
        raise _fail("image", f"the files add up to {total} bytes; the limit is {max_total_bytes}")
    checked = []
    for upload in images:
        if len(upload.data) > spec.max_input_image_bytes:
            raise _fail(
                upload.field,
                f"image {upload.filename!r} is {len(upload.data)} bytes; {spec.name} takes "
                f"at most {spec.max_input_image_bytes} per image",
            )
        checked.append(_open(upload, spec.input_formats, "image")[0])
    mask = _overlay(masks[0], checked[0], spec.max_mask_bytes) if masks else None
    markup = _overlay(markups[0], checked[0], spec.max_input_image_bytes) if markups else None
    return EditFiles(tuple(checked), mask, markup)


def _overlay(upload: Upload, first: InputImage, max_bytes: int) -> InputImage:
    """A mask or markup: a PNG with an alpha channel, the size of the first image."""
    what = upload.field
    if len(upload.data) > max_bytes:
        raise _fail(what, f"the {what} is {len(upload.data)} bytes; the limit is {max_bytes}")
    image, alpha = _open(upload, ("png",), what)
    if not alpha:
        raise _fail(
            what,
            f"the {what} must be a PNG with an alpha channel (its transparent pixels "
            + ("mark where to edit)" if what == "mask" else "leave the image as it is)"),
        )
    if (image.width, image.height) != (first.width, first.height):
        raise _fail(
            what,
            f"the {what} is {image.width}x{image.height} but the first image is "
            f"{first.width}x{first.height}; they must be the same size",
        )
    return image
