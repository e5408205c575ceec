"""`local/...` models: generated on this machine, no network, no key.

Each picture is encoded straight into the file the request gives for it (a temp file in
the file store), a block at a time, like a remote provider's answer: the encoded image is
never whole in memory.
"""

from __future__ import annotations

import asyncio

from PIL import Image

from imagegate.providers.base import (
    GeneratedImage,
    ImageFile,
    ImageRequest,
    PartialImage,
    PartialSink,
    ProviderResult,
)
from imagegate.providers.procedural import (
    edit_image,
    progressive,
    render,
    render_svg,
    write_gif,
    write_png,
)

GIF_FRAMES, GIF_FRAME_MS = 9, 200  # OpenAI's defaults


def _make(request: ImageRequest, index: int, file: ImageFile) -> Image.Image | None:
    """Image `index` of the request, written into `file`: the picture (for progressive
    partials), or None for a format drawn as a whole (GIF, SVG)."""
    seed = request.seed or 0
    fmt = request.output_format
    picture: Image.Image
    if request.is_edit:
        mask = request.mask.data if request.mask else None
        picture = edit_image(request.prompt, seed, request.images[0].data, mask, index)
    elif fmt == "gif":
        frames = int(request.params.get("frame_count") or GIF_FRAMES)
        duration = int(request.params.get("frame_duration_ms") or GIF_FRAME_MS)
        size = (request.width, request.height)
        write_gif(request.prompt, seed, *size, index, frames, duration, file)
        return None
    elif fmt == "svg":
        file.write(render_svg(request.prompt, seed, request.width, request.height, index))
        return None
    else:
        picture = render(request.prompt, seed, request.width, request.height, index)
    write_png(picture, file)
    return picture


async def _made(request: ImageRequest, index: int) -> tuple[ImageFile, Image.Image | None]:
    file = request.new_file()
    try:
        # Pillow releases the GIL while drawing and encoding, so threads use both cores.
        return file, await asyncio.to_thread(_make, request, index, file)
    except BaseException:
        file.discard()
        raise


class ProceduralProvider:
    async def generate(self, request: ImageRequest) -> ProviderResult:
        made = await asyncio.gather(*(_made(request, index) for index in range(request.n)))
        return ProviderResult(images=[GeneratedImage(file) for file, _ in made])

    async def generate_streaming(
        self, request: ImageRequest, on_partial: PartialSink
    ) -> ProviderResult:
        """One image; before it, `partial_images` progressive renders of it."""
        final, picture = await _made(request, 0)
        steps = request.partial_images or 0
        for step in range(steps if picture is not None else 0):
            partial = request.new_file()
            try:
                await asyncio.to_thread(_write_partial, picture, step, steps, partial)
            except BaseException:
                partial.discard()
                raise
            await on_partial(PartialImage(step, partial))
        return ProviderResult(images=[GeneratedImage(final)])


def _write_partial(picture: Image.Image | None, step: int, steps: int, file: ImageFile) -> None:
    assert picture is not None
    write_png(progressive(picture, step, steps), file)
