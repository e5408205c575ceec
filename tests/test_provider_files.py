"""One provider protocol: every provider writes each image into a file the request gives
it (a temp file in the file store, hashed as it is written), never handing back whole
bytes. The local provider encodes into it; LiteLLM's base64 answer is decoded into it a
piece at a time. Against the fake OpenAI server at the network boundary for LiteLLM."""

from __future__ import annotations

import base64
from pathlib import Path

from imagegate.digest import weave_digest
from imagegate.providers import load_catalog
from imagegate.providers.answer_stream import EventScanner
from imagegate.providers.base import (
    GeneratedImage,
    ImageRequest,
    MemoryFile,
    PartialImage,
    Secret,
)
from imagegate.providers.litellm import LiteLLMProvider
from imagegate.providers.local import ProceduralProvider
from imagegate.providers.procedural import render_png
from imagegate.store.staging import StagedFile
from tests.fake_openai import FakeOpenAI, Reply, small_png


class Files:
    """The request's `image_files`: each new file a StagedFile under `root`, recorded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[StagedFile] = []

    def __call__(self) -> StagedFile:
        file = StagedFile(self.root)
        self.made.append(file)
        return file


def content(file: object) -> bytes:
    assert isinstance(file, StagedFile)
    file.sync()
    return file.path.read_bytes()


def test_a_provider_image_is_a_file_not_bytes() -> None:
    assert [f.name for f in GeneratedImage.__dataclass_fields__.values()] == [
        "file",
        "revised_prompt",
    ]
    assert [f.name for f in PartialImage.__dataclass_fields__.values()] == ["index", "file"]


async def test_the_local_provider_encodes_into_the_files_it_is_given(tmp_path: Path) -> None:
    spec = load_catalog().get("local/procedural")
    assert spec is not None
    files = Files(tmp_path)
    request = ImageRequest(spec=spec, prompt="a red fox", n=2, size="512x512", image_files=files)
    result = await ProceduralProvider().generate(request)
    assert [image.file for image in result.images] == files.made
    for index, file in enumerate(files.made):
        expected = render_png("a red fox", 0, 512, 512, index)
        assert file.digest == weave_digest(expected)  # hashed as it was written
        assert content(file) == expected


async def test_the_local_provider_streams_partials_as_files(tmp_path: Path) -> None:
    spec = load_catalog().get("local/procedural")
    assert spec is not None
    files = Files(tmp_path)
    request = ImageRequest(
        spec=spec, prompt="a red fox", n=1, size="256x256", partial_images=2, image_files=files
    )
    partials: list[PartialImage] = []

    async def on_partial(partial: PartialImage) -> None:
        partials.append(partial)

    result = await ProceduralProvider().generate_streaming(request, on_partial)
    assert [p.index for p in partials] == [0, 1]
    assert files.made == [result.images[0].file, *(p.file for p in partials)]
    assert content(result.images[0].file) == render_png("a red fox", 0, 256, 256, 0)
    assert all(content(p.file).startswith(b"\x89PNG") for p in partials)


async def test_litellm_base64_is_decoded_into_the_files_it_is_given(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        f"""
[models."litellm-openai/gen"]
provider = "litellm"
upstream_model = "openai/gpt-image-1.5"
base_url = "{fake.url}/v1"
api_key_env = "LITELLM_TEST_KEY"
params = ["size"]
sizes = ["1024x1024"]
max_attempts = 1
"""
    )
    spec = load_catalog(models).get("litellm-openai/gen")
    assert spec is not None
    fake.reset()
    fake.push(Reply(image=small_png(7, size=300)))
    files = Files(tmp_path / "staged")
    request = ImageRequest(
        spec=spec,
        prompt="a red fox",
        n=1,
        size="1024x1024",
        api_key=Secret("sk-litellm-0123456789"),
        image_files=files,
    )
    result = await LiteLLMProvider().generate(request)
    assert [image.file for image in result.images] == files.made
    assert content(files.made[0]) == small_png(7, size=300)


def test_upstream_events_are_read_however_the_bytes_are_split() -> None:
    """Server-sent events cut at every byte, with CRLF line ends, comments, an `event:`
    line, data over two lines and `[DONE]`: each event's image lands in a sink of its
    own, and the rest of its JSON is parsed."""
    png = small_png(3, size=80)
    b64 = base64.b64encode(png).decode()
    stream = (
        ": keep-alive\r\n\r\n"
        "event: image_generation.partial_image\r\n"
        f'data: {{"type":"image_generation.partial_image","partial_image_index":0,\r\n'
        f'data: "b64_json":"{b64}"}}\r\n\r\n'
        f'data:{{"type":"image_generation.completed","b64_json":"{b64}","usage":{{"n":1}}}}\n\n'
        "data: [DONE]\n\n"
    ).encode()
    sinks: list[MemoryFile] = []

    def new_sink() -> MemoryFile:
        sinks.append(MemoryFile())
        return sinks[-1]

    scanner = EventScanner(new_sink)
    events = [event for i in range(len(stream)) for event in scanner.feed(stream[i : i + 1])]
    assert scanner.done
    assert [e.data["type"] for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert events[0].data["partial_image_index"] == 0 and events[1].data["usage"] == {"n": 1}
    assert [e.file for e in events] == sinks
    assert [sink.getvalue() for sink in sinks] == [png, png]
    assert [e.invalid for e in events] == [None, None]


def test_bad_base64_in_an_event_is_marked_invalid() -> None:
    scanner = EventScanner(MemoryFile)
    (event,) = scanner.feed(b'data: {"type":"x.partial_image","b64_json":"abc!"}\n\n')
    assert event.invalid is not None
