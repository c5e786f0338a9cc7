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


# --- Qwen2.5-VL, the shape the exllamav3 engine serves images for ---------------------------------

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>"]
# Qwen2-VL's own template, cut down: each image part becomes <|vision_start|><|image_pad|><|vision_end|>.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_MAX_PIXELS = 28 * 28 * 256  # a small budget, so large images are shrunk (up to 256 tokens each)


def build_tiny_qwen25_vl(directory: Path, seed: int = 0) -> Path:
    """A random-weight Qwen2.5-VL in the published checkpoints' layout: a flat config.json,
    `visual.*` and `model.language_model.*` tensors (what ExLlamaV3 reads; transformers maps
    them too), the Qwen2-VL image processor's preprocessor_config.json and a byte-level BPE
    tokenizer holding Qwen's vision tokens. Widths are multiples of 128, as ExLlamaV3's FP16
    layers need."""
    import json

    import torch
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=320, special_tokens=QWEN_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ids = {token: bpe.token_to_id(token) for token in QWEN_SPECIAL_TOKENS}
    text = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=128, vocab_size=384, max_position_embeddings=4096,
                rms_norm_eps=1e-6, rope_theta=1000000.0, hidden_act="silu", tie_word_embeddings=False,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=2, hidden_size=256, intermediate_size=512, num_heads=2, out_hidden_size=256,
                  patch_size=14, spatial_patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=112, fullatt_block_indexes=[1], hidden_act="silu", in_chans=3, tokens_per_second=2,
                  model_type="qwen2_5_vl")
    special = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|endoftext|>"],
                   vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special))
    directory.mkdir(parents=True, exist_ok=True)
    model.eval().to(torch.float16).save_pretrained(directory)

    # The published layout (transformers' checkpoint mapping reads it back): `visual.*` at the top.
    weights = directory / "model.safetensors"
    tensors = {name.removeprefix("model.") if name.startswith("model.visual.") else name: tensor
               for name, tensor in load_file(str(weights)).items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    config = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
              "torch_dtype": "float16", **text, **special, "vision_config": vision}
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "min_pixels": 28 * 28 * 4, "max_pixels": QWEN_MAX_PIXELS, "patch_size": 14, "temporal_patch_size": 2,
        "merge_size": 2, "do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory
