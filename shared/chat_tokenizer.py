"""A model's tokenizer and chat template, without PyTorch: what both the API and the workers use
to turn a conversation into prompt tokens, so the two sides always count the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from tokenizers import Tokenizer

from shared.chat_template import compile_chat_template
from shared.tool_prompt import arguments_object, template_renders_tools, with_fallback_tool_prompt

# Used only when a model ships without a chat template.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


class ChatTokenizer:
    def __init__(self, tokenizer: Tokenizer, chat_template: str, special_tokens: dict[str, str]):
        self._tokenizer = tokenizer
        self._template = compile_chat_template(chat_template)
        self.renders_tools = template_renders_tools(chat_template)
        self.special_tokens = special_tokens
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_directory(cls, directory: Path) -> "ChatTokenizer":
        directory = Path(directory)
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        template = config.get("chat_template")
        template_file = directory / "chat_template.jinja"
        if template_file.exists():
            template = template_file.read_text()
        if isinstance(template, list):  # several named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        special = {key: _token_text(config.get(key)) for key in SPECIAL_TOKEN_KEYS}
        return cls(tokenizer, template or FALLBACK_CHAT_TEMPLATE,
                   {k: v for k, v in special.items() if v is not None})

    def render(self, messages: Iterable[dict[str, Any]], tools: Sequence[dict[str, Any]] = (),
               content_parts: bool = False) -> str:
        """The prompt text for a conversation, ending where the assistant's answer begins.

        Tools go to the template when it renders them, else into LlamaGate's fallback prompt.
        `content_parts`: every message's content goes to the template as a list of parts, as vision
        models' templates expect (they iterate over parts, and would render a plain string as nothing)."""
        rendered = [_template_message(m) for m in messages]
        if not self.renders_tools:
            rendered = with_fallback_tool_prompt(rendered, tools)
        if content_parts:
            rendered = [dict(m, content=_as_parts(m.get("content"))) for m in rendered]
        return self._template.render(messages=rendered, add_generation_prompt=True,
                                     tools=list(tools) if tools and self.renders_tools else None,
                                     documents=None, **self.special_tokens)

    def encode(self, text: str) -> list[int]:
        # The rendered template already holds the special tokens it needs.
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def prompt_ids(self, messages: Iterable[dict[str, Any]], tools: Sequence[dict[str, Any]] = (),
                   content_parts: bool = False) -> list[int]:
        return self.encode(self.render(messages, tools, content_parts))

    def to_json(self) -> str:
        """The tokenizer in tokenizer.json form (what grammar engines build their token tables from)."""
        return self._tokenizer.to_str()

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self._tokenizer.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        return self.token_id(self.special_tokens.get("eos_token"))


def has_images(content: Any) -> bool:
    return isinstance(content, list) and any(part.get("type") == "image" for part in content)


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of an array joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    role = message["role"]
    rendered = dict(message)
    # OpenAI's "developer" role is the newer name of "system"; templates know only the latter.
    rendered["role"] = "system" if role == "developer" else role
    content = message.get("content")
    # Images stay content parts ({"type": "image"} where each image goes), for vision templates; the
    # rest is plain text, which every template understands.
    rendered["content"] = [dict(part) for part in content] if has_images(content) else message_text(content)
    if message.get("tool_calls"):
        # Templates that render tool calls expect the arguments as a mapping, not a JSON string.
        rendered["tool_calls"] = [dict(call, function=dict(call["function"], arguments=arguments_object(
            call["function"].get("arguments")))) for call in message["tool_calls"]]
    return rendered


def _as_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if content else []


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # serialized AddedToken
        return value.get("content")
    return value
