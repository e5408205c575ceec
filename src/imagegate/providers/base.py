"""The provider protocol: what the generation service asks of every image backend."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# The providers' errors are a family of the one tree (imagegate.errors), re-exported here
# beside the protocol that raises them.
from imagegate.errors import ProviderError as ProviderError
from imagegate.providers.catalog import ModelSpec


class Secret:
    """A credential that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class InputImage:
    """An image a caller sent to be edited (or a mask), its type sniffed from its bytes."""

    data: bytes
    mimetype: str
    width: int
    height: int
    filename: str = "image.png"

    @property
    def extension(self) -> str:
        return self.mimetype.rsplit("/", 1)[-1].split("+", 1)[0]


@dataclass(frozen=True)
class EditFiles:
    """What an edit works on: 1-16 images, and an optional mask (its fully transparent
    pixels mark where to edit the first image) or markup (a transparent PNG drawn over
    the first image to guide the edit; never with a mask)."""

    images: tuple[InputImage, ...]
    mask: InputImage | None = None
    markup: InputImage | None = None


class ImageFile(Protocol):
    """Where a provider puts an image it makes or receives, as the bytes come (a temp
    file in the file store, hashed as it is written: `imagegate.store.staging.StagedFile`).
    A provider never holds an image whole: it writes into one of these."""

    def write(self, data: bytes) -> None: ...

    def discard(self) -> None: ...


class MemoryFile(io.BytesIO):
    """An image in memory: where a provider is called without `image_files` (on its
    own, outside the generation service)."""

    def discard(self) -> None:
        self.close()


@dataclass(frozen=True)
class PartialImage:
    """One progressive render of a streamed generation, in its own file."""

    index: int
    file: ImageFile


# Receives each partial image as soon as the provider has it.
PartialSink = Callable[[PartialImage], Awaitable[None]]


# Gives a new ImageFile for each image of an answer.
ImageFiles = Callable[[], ImageFile]


@dataclass(frozen=True)
class ImageRequest:
    """Validated, effective parameters for one generation or edit."""

    spec: ModelSpec
    prompt: str
    n: int
    size: str  # "WxH"
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # quality, style, ... as sent
    api_key: Secret | None = None
    # An edit: the images to edit (the first one is what `mask` applies to).
    images: tuple[InputImage, ...] = ()
    mask: InputImage | None = None
    markup: InputImage | None = None
    # Streaming: how many partial images to send before the final one (None: no stream).
    partial_images: int | None = None
    # Where the provider puts each image (`new_file`; without it, memory).
    image_files: ImageFiles | None = None

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def is_edit(self) -> bool:
        return bool(self.images)

    @property
    def stream(self) -> bool:
        return self.partial_images is not None

    @property
    def timeout_s(self) -> float:
        """The effective timeout of one upstream request (the model's rule for this
        quality and size)."""
        quality = self.params.get("quality")
        return self.spec.timeout_for(str(quality) if quality else None, self.size)

    @property
    def output_format(self) -> str:
        return str(self.params.get("output_format", self.spec.output_format))

    def new_file(self) -> ImageFile:
        """A new file for one image of the answer."""
        return self.image_files() if self.image_files is not None else MemoryFile()

    @property
    def width(self) -> int:
        return int(self.size.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("x")[1])


@dataclass(frozen=True)
class GeneratedImage:
    """An image a provider made: the file (from `ImageRequest.new_file`) it wrote it to."""

    file: ImageFile
    revised_prompt: str | None = None


@dataclass(frozen=True)
class ItemError:
    """One image (or one request's worth of images) that failed while others succeeded."""

    message: str
    error_type: str  # a ProviderError kind's `error_type`
    status_code: int | None = None  # the provider's HTTP status

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": self.message,
            "error_type": self.error_type,
            "status_code": self.status_code,
        }


@dataclass
class ProviderResult:
    images: list[GeneratedImage]
    # Provider usage as reported (normalised later by imagegate.pricing).
    usage: dict[str, Any] = field(default_factory=dict)
    errors: list[ItemError] = field(default_factory=list)
    # One entry per HTTP attempt: {attempt, status_code?, error_type?, latency_ms, ...}.
    attempts: list[dict[str, Any]] = field(default_factory=list)


class Provider(Protocol):
    async def generate(self, request: ImageRequest) -> ProviderResult: ...


class StreamingProvider(Provider, Protocol):
    """A provider that can also stream: `on_partial` gets each partial image as it comes
    (`request.partial_images` of them at most), and the result is the final images."""

    async def generate_streaming(
        self, request: ImageRequest, on_partial: PartialSink
    ) -> ProviderResult: ...
