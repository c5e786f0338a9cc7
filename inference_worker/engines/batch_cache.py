"""A KV cache for continuous batching with transformers models.

Rows are sequences, left-padded to a common length so that one decode step appends one column
to every row. Each layer's keys and values live in a preallocated buffer that grows by doubling:
a decode step writes one column in place instead of re-concatenating the whole cache (which is
what transformers' DynamicCache does, and costs a full copy per token).

Rows join and leave only through `BatchCache.gather`, which copies the chosen rows into a fresh,
compact cache: the cost of a copy when a request starts or ends, never per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

MIN_CAPACITY = 64


class _BufferLayer(DynamicLayer):
    """One attention layer's keys and values for every row, in a growable buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.length = 0
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self._keys is None:
            self.is_initialized = True
            self.device = key_states.device
            self._allocate(key_states, max(MIN_CAPACITY, key_states.shape[-2]))
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._grow(max(end, 2 * self._keys.shape[-2]))
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self.keys = self._keys[:, :, :end]
        self.values = self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def load_rows(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Take over buffers built by `BatchCache.gather` (zeros where rows are padded)."""
        self.is_initialized = True
        self.device = keys.device
        self._keys, self._values, self.length = keys, values, length
        self.keys = keys[:, :, :length]
        self.values = values[:, :, :length]

    def _allocate(self, like: torch.Tensor, capacity: int) -> None:
        batch, heads, _, head_dim = like.shape
        # Zeros, not empty: padded columns are masked, but a masked NaN would still poison the output.
        self._keys = like.new_zeros((batch, heads, capacity, head_dim))
        self._values = like.new_zeros((batch, heads, capacity, head_dim))

    def _grow(self, capacity: int) -> None:
        keys, values = self._keys, self._values
        self._allocate(keys, capacity)
        self._keys[:, :, :self.length] = keys[:, :, :self.length]
        self._values[:, :, :self.length] = values[:, :, :self.length]


@dataclass(frozen=True)
class RowRef:
    """Row `row` of `cache`: one sequence to carry into a new batch."""

    cache: "BatchCache"
    row: int


class BatchCache(Cache):
    """All running sequences' KV, plus how many real (unpadded) tokens each row holds."""

    def __init__(self, num_layers: int, lengths: list[int] | None = None):
        super().__init__(layers=[_BufferLayer() for _ in range(num_layers)])
        self.lengths: list[int] = list(lengths or [])

    @property
    def width(self) -> int:
        """The common (padded) length of all rows."""
        return self.layers[0].length

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def decode_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention mask and position ids for a step that appends one token to every row."""
        width = self.width
        mask = torch.zeros((self.rows, width + 1), dtype=torch.long)
        for row, length in enumerate(self.lengths):
            mask[row, width - length:] = 1
        positions = torch.tensor(self.lengths, dtype=torch.long).unsqueeze(1)
        return mask, positions

    def advance(self) -> None:
        """Record that the last forward pass appended one token to every row."""
        self.lengths = [length + 1 for length in self.lengths]

    @classmethod
    def gather(cls, refs: list[RowRef], num_layers: int, headroom: int = MIN_CAPACITY) -> "BatchCache":
        """A new compact cache holding the given rows (from any caches), right-aligned, zero-padded."""
        lengths = [ref.cache.lengths[ref.row] for ref in refs]
        result = cls(num_layers, lengths)
        if not refs:
            return result
        width = max(lengths)
        for layer_index in range(num_layers):
            sample = refs[0].cache.layers[layer_index].keys
            _, heads, _, head_dim = sample.shape
            shape = (len(refs), heads, width + headroom, head_dim)
            keys, values = sample.new_zeros(shape), sample.new_zeros(shape)
            for new_row, (ref, length) in enumerate(zip(refs, lengths)):
                source = ref.cache.layers[layer_index]
                src_end = source.length
                keys[new_row, :, width - length:width] = source.keys[ref.row, :, src_end - length:src_end]
                values[new_row, :, width - length:width] = source.values[ref.row, :, src_end - length:src_end]
            result.layers[layer_index].load_rows(keys, values, width)
        return result


def prefill_inputs(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded input ids, attention mask and position ids for prefilling several prompts at once."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    positions = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        start = width - len(prompt)
        ids[row, start:] = torch.tensor(prompt, dtype=torch.long)
        mask[row, start:] = 1
        positions[row, start:] = torch.arange(len(prompt))
    return ids, mask, positions
