"""`local/...` models: generated on this machine, no network, no key."""

from __future__ import annotations

import asyncio

from imagegate.providers.base import GeneratedImage, ImageRequest, ProviderResult
from imagegate.providers.procedural import render_png


class ProceduralProvider:
    async def generate(self, request: ImageRequest) -> ProviderResult:
        seed = request.seed or 0
        # Pillow releases the GIL while drawing and encoding, so threads use both cores.
        pngs = await asyncio.gather(
            *(
                asyncio.to_thread(
                    render_png, request.prompt, seed, request.width, request.height, index
                )
                for index in range(request.n)
            )
        )
        return ProviderResult(images=[GeneratedImage(data=png) for png in pngs])
