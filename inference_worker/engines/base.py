"""The engine interface: what the generation loop needs from anything that generates tokens.

An engine owns one model and a batch of running sequences. The loop calls every method from one
thread (the loop's own), so engines need no locks: `add` queues a request, `step` advances every
running sequence by (at least) one token and admits queued requests as capacity allows, `abort`
frees a request's sequences at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence

from broker.contracts import SamplingParams
from shared.chat_tokenizer import ChatTokenizer
from shared.images import DecodedImage
from shared.registry import ModelSpec
from shared.settings import Settings


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    n: int = 1
    grammar: str | None = None  # llguidance grammar the output must follow (shared/grammars.py)
    grammar_after: str | None = None  # the grammar applies only after this text (end of thinking)
    # What the model needs besides the tokens for this prompt's prefill (a vision model's pixel values).
    model_inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """A conversation made ready for an engine: its tokens, and any other prefill inputs."""

    ids: list[int]
    model_inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChoiceOutput:
    """What one step produced for one choice of one request."""

    request_id: str
    index: int
    text: str = ""
    tokens: int = 0  # tokens generated in this step
    finish_reason: str | None = None  # "stop" or "length" once the choice has ended


class PromptsWithImages(Protocol):
    """What an engine with vision loads for a vision model: its prompts with images."""

    def prompt(self, text: str, images: Sequence[DecodedImage]) -> Prompt:
        """The prompt for rendered `text` (a placeholder where each image goes) and its images."""


class Engine(ABC):
    name: ClassVar[str]
    accepts_images: ClassVar[bool] = False  # engines that load a `vision` for vision models set this

    def __init__(self, spec: ModelSpec, settings: Settings, tokenizer: ChatTokenizer):
        self.spec = spec
        self.settings = settings
        self.tokenizer = tokenizer
        self.max_sequences = settings.max_batch_size
        self.vision: PromptsWithImages | None = None  # set by load() for a vision model

    @abstractmethod
    def load(self) -> None:
        """Load the model (once per worker process); may take a while and should log progress."""

    def prompt_ids(self, messages: tuple[dict[str, Any], ...],
                   tools: tuple[dict[str, Any], ...] = ()) -> list[int]:
        """The prompt tokens for a conversation (and its tools), rendered with the model's chat template."""
        return self.tokenizer.prompt_ids(messages, tools)

    def prompt(self, messages: tuple[dict[str, Any], ...], tools: tuple[dict[str, Any], ...] = (),
               images: Sequence[DecodedImage] = ()) -> Prompt:
        """The prompt for a conversation with its images (in the order of its {"type": "image"} parts).
        Raises ValueError for what the engine cannot take. Called from the actors' threads, several
        at once: it may read the tokenizer and processor, never the running batch."""
        if self.vision is None:
            if images:
                raise ValueError(f"The {self.name} engine does not accept images for {self.spec.id}.")
            return Prompt(self.prompt_ids(messages, tools))
        # Vision models' templates take every message as content parts, with images or without.
        if not images:
            return Prompt(self.tokenizer.prompt_ids(messages, tools, content_parts=True))
        return self.vision.prompt(self.tokenizer.render(messages, tools, content_parts=True), images)

    @abstractmethod
    def add(self, request: EngineRequest) -> None:
        """Queue a request; it joins the running batch on a coming step. Raises ValueError for a
        request this engine cannot serve (a grammar it cannot compile or enforce)."""

    @abstractmethod
    def abort(self, request_id: str) -> None:
        """Drop a request, queued or running, and free its batch slots now. Unknown ids are ignored."""

    @abstractmethod
    def step(self) -> list[ChoiceOutput]:
        """Advance the batch: admit queued requests, generate the next token of every running choice."""

    @property
    @abstractmethod
    def running(self) -> int:
        """Sequences in the running batch."""

    @property
    @abstractmethod
    def queued(self) -> int:
        """Requests added but not yet running."""

    @property
    def has_work(self) -> bool:
        return self.running > 0 or self.queued > 0
