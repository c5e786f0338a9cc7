"""An embedding model's tokenizer, without PyTorch: the API turns texts into the token ids a worker
embeds, so the tokens counted (and charged) are exactly the tokens the model runs."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


class EmbeddingTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        # tokenizer.json files often carry the truncation and padding used in training; an input's
        # true length must be seen (to refuse it if too long), and padding is the worker's business.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_directory(cls, directory: Path) -> "EmbeddingTokenizer":
        return cls(Tokenizer.from_file(str(Path(directory) / "tokenizer.json")))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, with the model's special tokens (such as [CLS] and [SEP])."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=True)]
