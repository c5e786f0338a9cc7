"""ChatTokenizer renders prompts exactly as transformers' apply_chat_template does, without PyTorch."""

from __future__ import annotations

import copy
import json
import shutil

import jinja2
import pytest

from shared.chat_tokenizer import ChatTokenizer, message_text

CONVERSATIONS = {
    "one user turn": [{"role": "user", "content": "What is the capital of France?"}],
    "system and user": [{"role": "system", "content": "Answer in one word."},
                        {"role": "user", "content": "Capital of France?"}],
    "several turns": [{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "Hi!"},
                      {"role": "assistant", "content": "Hello."},
                      {"role": "user", "content": "Tell me a joke."}],
    "assistant without system": [{"role": "user", "content": "2+2?"},
                                 {"role": "assistant", "content": "4"},
                                 {"role": "user", "content": "And 3+3?"}],
    "unicode and newlines": [{"role": "user", "content": "Ça va? 👋\n\n日本語 — naïve\tcafé"}],
    "empty content": [{"role": "user", "content": ""}],
}


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def hf_prompt(hf_tokenizer, messages) -> str:
    return hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def hf_prompt_ids(hf_tokenizer, messages) -> list[int]:
    return hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=False)


@pytest.mark.parametrize("messages", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_render_matches_transformers(chat_tokenizer, hf_tokenizer, messages):
    assert chat_tokenizer.render(messages) == hf_prompt(hf_tokenizer, messages)


@pytest.mark.parametrize("messages", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_prompt_ids_match_transformers(chat_tokenizer, hf_tokenizer, messages):
    assert chat_tokenizer.prompt_ids(messages) == hf_prompt_ids(hf_tokenizer, messages)


def test_prompt_ends_where_the_assistant_answer_begins(chat_tokenizer):
    assert chat_tokenizer.render(CONVERSATIONS["one user turn"]).endswith("<|im_start|>assistant\n")


def test_developer_role_renders_as_system(chat_tokenizer, hf_tokenizer):
    developer = [{"role": "developer", "content": "Answer in one word."},
                 {"role": "user", "content": "Capital of France?"}]
    as_system = [{"role": "system", "content": "Answer in one word."},
                 {"role": "user", "content": "Capital of France?"}]
    assert chat_tokenizer.prompt_ids(developer) == hf_prompt_ids(hf_tokenizer, as_system)
    assert "developer" not in chat_tokenizer.render(developer)


def test_text_parts_render_as_their_text_joined_by_newlines(chat_tokenizer, hf_tokenizer):
    parts = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
             {"role": "user", "content": [{"type": "text", "text": "First line."},
                                          {"type": "text", "text": "Second line."}]}]
    as_text = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "First line.\nSecond line."}]
    assert chat_tokenizer.prompt_ids(parts) == hf_prompt_ids(hf_tokenizer, as_text)


def test_null_assistant_content_renders_as_empty(chat_tokenizer, hf_tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None},
                {"role": "user", "content": "Hello?"}]
    as_text = [dict(m, content=m["content"] or "") for m in messages]
    assert chat_tokenizer.render(messages) == hf_prompt(hf_tokenizer, as_text)


def test_render_leaves_the_messages_unchanged(chat_tokenizer):
    messages = [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": "Hi"}]
    original = copy.deepcopy(messages)
    chat_tokenizer.render(messages)
    assert messages == original


def test_special_tokens_match_transformers(chat_tokenizer, hf_tokenizer):
    assert chat_tokenizer.eos_token_id == hf_tokenizer.eos_token_id
    assert chat_tokenizer.special_tokens["eos_token"] == hf_tokenizer.eos_token
    assert chat_tokenizer.vocab_size == len(hf_tokenizer)


def test_encode_adds_no_special_tokens(chat_tokenizer, hf_tokenizer):
    text = "<|im_start|>user\nHi<|im_end|>"
    assert chat_tokenizer.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)
    assert chat_tokenizer.encode(text).count(chat_tokenizer.eos_token_id) == 1


def test_decode_skips_special_tokens(chat_tokenizer):
    ids = chat_tokenizer.encode("Hello<|im_end|> world")
    assert chat_tokenizer.eos_token_id in ids
    assert chat_tokenizer.decode(ids) == "Hello world"


def test_token_id_of_unknown_or_missing_token(chat_tokenizer):
    assert chat_tokenizer.token_id(None) is None
    assert chat_tokenizer.token_id("<|no such token|>") is None
    assert chat_tokenizer.token_id("<|im_end|>") == chat_tokenizer.eos_token_id


# --- message_text -------------------------------------------------------------------------------

@pytest.mark.parametrize("content, text", [
    (None, ""),
    ("plain", "plain"),
    ([], ""),
    ([{"type": "text", "text": "a"}], "a"),
    ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "a\nb"),
    ([{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "caption"}], "caption"),
])
def test_message_text(content, text):
    assert message_text(content) == text


# --- from_directory -----------------------------------------------------------------------------

@pytest.fixture
def bare_tokenizer_dir(tokenizer_dir, tmp_path):
    """A directory with only tokenizer.json: no config, no chat template."""
    shutil.copy(tokenizer_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    return tmp_path


def test_model_without_a_template_gets_the_chatml_fallback(bare_tokenizer_dir):
    tokenizer = ChatTokenizer.from_directory(bare_tokenizer_dir)
    assert tokenizer.render([{"role": "developer", "content": "S"}, {"role": "user", "content": "U"}]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.special_tokens == {}
    assert tokenizer.eos_token_id is None


def test_template_from_the_config_is_used(bare_tokenizer_dir):
    config = {"chat_template": "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{{ eos_token }}",
              "eos_token": {"content": "<|im_end|>", "special": True}}
    (bare_tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = ChatTokenizer.from_directory(bare_tokenizer_dir)
    assert tokenizer.render([{"role": "user", "content": "hi"}]) == "[user:hi]<|im_end|>"
    assert tokenizer.eos_token_id == tokenizer.token_id("<|im_end|>")


def test_default_of_several_named_templates_is_used(bare_tokenizer_dir):
    config = {"chat_template": [{"name": "tool_use", "template": "TOOLS"},
                                {"name": "default", "template": "DEFAULT"}]}
    (bare_tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(config))
    assert ChatTokenizer.from_directory(bare_tokenizer_dir).render([]) == "DEFAULT"


def test_template_file_wins_over_the_config(bare_tokenizer_dir):
    (bare_tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": "CONFIG"}))
    (bare_tokenizer_dir / "chat_template.jinja").write_text("FILE")
    assert ChatTokenizer.from_directory(bare_tokenizer_dir).render([]) == "FILE"


def test_template_runs_sandboxed(bare_tokenizer_dir):
    (bare_tokenizer_dir / "chat_template.jinja").write_text("{{ messages.append(1) }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        ChatTokenizer.from_directory(bare_tokenizer_dir).render([])


def test_template_may_reject_a_conversation(bare_tokenizer_dir):
    (bare_tokenizer_dir / "chat_template.jinja").write_text(
        "{% if messages[0].role != 'user' %}{{ raise_exception('must start with user') }}{% endif %}ok")
    tokenizer = ChatTokenizer.from_directory(bare_tokenizer_dir)
    assert tokenizer.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(jinja2.TemplateError, match="must start with user"):
        tokenizer.render([{"role": "assistant", "content": "x"}])


# --- tools --------------------------------------------------------------------------------------

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
TOOL_ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
]


def test_template_without_tools_gets_the_fallback_tool_prompt(chat_tokenizer):
    assert not chat_tokenizer.renders_tools  # SmolLM2's template
    prompt = chat_tokenizer.render(TOOL_ROUND_TRIP, [WEATHER_TOOL])
    assert prompt.startswith("<|im_start|>system\nYou can call functions")
    assert json.dumps(WEATHER_TOOL) in prompt
    # The earlier call and its result are rendered in the same format, as assistant and user turns.
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            "</tool_call><|im_end|>") in prompt
    assert "<|im_start|>user\n<tool_response>\n18 C, sunny\n</tool_response><|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_fallback_tool_prompt_joins_an_existing_system_message(chat_tokenizer):
    prompt = chat_tokenizer.render([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "x"}],
                                   [WEATHER_TOOL])
    assert prompt.startswith("<|im_start|>system\nBe terse.\n\nYou can call functions")
    assert prompt.count("<|im_start|>system") == 1


def test_no_tools_renders_as_before(chat_tokenizer, hf_tokenizer):
    messages = [{"role": "user", "content": "x"}]
    assert chat_tokenizer.render(messages, ()) == hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)


def test_template_that_takes_tools_gets_them_and_mapping_arguments(bare_tokenizer_dir):
    (bare_tokenizer_dir / "chat_template.jinja").write_text(
        "{% for t in tools %}[{{ t.function.name }}]{% endfor %}"
        "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments.city }}{% endfor %}"
        "{{ m.role }};{% endfor %}")
    tokenizer = ChatTokenizer.from_directory(bare_tokenizer_dir)
    assert tokenizer.renders_tools
    assert tokenizer.render(TOOL_ROUND_TRIP, [WEATHER_TOOL]) == "[get_weather]user;Parisassistant;tool;"


# --- images -------------------------------------------------------------------------------------

def test_messages_with_images_reach_the_template_as_parts_and_others_as_text(bare_tokenizer_dir):
    (bare_tokenizer_dir / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m.role }}:{% if m.content is string %}{{ m.content }}{% else %}"
        "{% for p in m.content %}{% if p.type == 'image' %}<image>{% else %}{{ p.text }}{% endif %}{% endfor %}"
        "{% endif %}]{% endfor %}")
    tokenizer = ChatTokenizer.from_directory(bare_tokenizer_dir)
    messages = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "text", "text": "Left:"}, {"type": "image"},
                                             {"type": "text", "text": "Right:"}, {"type": "image"}]}]
    assert tokenizer.render(messages) == "[system:Be brief.][user:Left:<image>Right:<image>]"
    assert messages[1]["content"][1] == {"type": "image"}, "the messages are left unchanged"


def test_message_text_leaves_images_out():
    assert message_text([{"type": "image"}, {"type": "text", "text": "caption"}]) == "caption"


def test_content_parts_hand_every_message_over_as_parts(bare_tokenizer_dir):
    (bare_tokenizer_dir / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m.role }}:{% for p in m.content %}{{ p.type }}={{ p.text }};{% endfor %}]"
        "{% endfor %}")
    tokenizer = ChatTokenizer.from_directory(bare_tokenizer_dir)
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [{"type": "text",
                                                                                        "text": "a"}]},
                {"role": "assistant", "content": None}]
    assert tokenizer.render(messages, content_parts=True) == "[system:text=Be brief.;][user:text=a;][assistant:]"
