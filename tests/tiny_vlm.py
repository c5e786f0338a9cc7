"""A tiny LLaVA with random weights, built locally (no model hub): to test the vision plumbing.

Its parts are the real ones at toy sizes: a CLIP vision tower (56x56 images, 14-pixel patches:
16 image tokens per image), a Llama decoder, a byte-level BPE tokenizer trained here on a few
sentences, a ChatML-style chat template that places `<image>` where each image goes, and the
LlavaProcessor with CLIP's PIL image processor (no torchvision). Its answers are noise; what
tests can check is that images reach the model and are counted right.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 56
PATCH_SIZE = 14
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2  # one per patch; the CLS feature is dropped ("default")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
# Like the templates llava-hf checkpoints ship, it takes content only as a list of parts: a plain
# string would render as nothing, so LlamaGate must hand every message over as parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "What is in this picture? Describe the image in a few words.",
    "A red square on a white background, and a blue circle next to it.",
    "Which of the two images is larger? The first one is larger than the second.",
    "You are a helpful assistant that answers questions about images.",
]


def build_tiny_llava(directory: Path, seed: int = 0) -> Path:
    """Write the model, its processor and tokenizer to `directory` (Hugging Face format)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    ids = {token: bpe.token_to_id(token) for token in SPECIAL_TOKENS}

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                                       projection_dim=32),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=1, vocab_size=bpe.get_vocab_size(), max_position_embeddings=4096,
                                bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"],
                                pad_token_id=ids["<|endoftext|>"]),
        image_token_index=ids["<image>"], vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=TOKENS_PER_IMAGE)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def registry_entry(model_id: str, directory: Path) -> str:
    """The model's [[models]] table, as an operator would add it to the registry."""
    return f'''
[[models]]
id = "{model_id}"
engine = "transformers"
owned_by = "llamagate-tests"
context_length = 2048
capabilities = ["chat", "vision"]
weights = {{ path = "{directory}", format = "hf" }}
pricing = {{ input = "1.00", output = "2.00" }}
'''
