"""`local/...` models: generated on this machine, no network, no key."""

from __future__ import annotations

import asyncio
import base64

from imagegate.providers.base import (
    GeneratedImage,
    ImageRequest,
    PartialImage,
    PartialSink,
    ProviderResult,
)
from imagegate.providers.procedural import (
    edit_png,
    progressive,
    render_gif,
    render_png,
    render_svg,
)

GIF_FRAMES, GIF_FRAME_MS = 9, 200  # OpenAI's defaults


def _make(request: ImageRequest, index: int) -> bytes:
    seed = request.seed or 0
    if request.is_edit:
        mask = request.mask.data if request.mask else None
        return edit_png(request.prompt, seed, request.images[0].data, mask, index)
    fmt = request.output_format
    if fmt == "gif":
        frames = int(request.params.get("frame_count") or GIF_FRAMES)
        duration = int(request.params.get("frame_duration_ms") or GIF_FRAME_MS)
        return render_gif(
            request.prompt, seed, request.width, request.height, index, frames, duration
        )
    if fmt == "svg":
        return render_svg(request.prompt, seed, request.width, request.height, index)
    return render_png(request.prompt, seed, request.width, request.height, index)


class ProceduralProvider:
    async def generate(self, request: ImageRequest) -> ProviderResult:
        # Pillow releases the GIL while drawing and encoding, so threads use both cores.
        images = await asyncio.gather(
            *(asyncio.to_thread(_make, request, index) for index in range(request.n))
        )
        return ProviderResult(images=[GeneratedImage(data=data) for data in images])

    async def generate_streaming(
        self, request: ImageRequest, on_partial: PartialSink
    ) -> ProviderResult:
        """One image; before it, `partial_images` progressive renders of it."""
        final = await asyncio.to_thread(_make, request, 0)
        steps = request.partial_images or 0
        for step in range(steps):
            partial = await asyncio.to_thread(progressive, final, step, steps)
            await on_partial(PartialImage(step, base64.b64encode(partial).decode()))
        return ProviderResult(images=[GeneratedImage(data=final)])
