"""Prompt texts -> conditioning tensors [L, D]. The only module that touches the tokenizer and text encoder."""

import re
import warnings

import torch

from .errors import MorphError
from .ops import replace_rows, weighted_sum


def embedding_shape(tokenizer, text_encoder) -> tuple[int, int]:
    """(L, D): token slots per prompt and channels per slot, as the model defines them."""
    return tokenizer.model_max_length, text_encoder.config.hidden_size


class PromptEncoder:
    """Encodes each distinct text once, the way diffusers' encode_prompt does, and combines them."""

    def __init__(self, tokenizer, text_encoder):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    def text(self, text: str) -> torch.Tensor:
        """The full hidden-state tensor of one prompt, padding slots included: [L, D]."""
        if text not in self._cache:
            max_length = self.tokenizer.model_max_length
            n_tokens = len(self.tokenizer(text).input_ids)
            if n_tokens > max_length:
                warnings.warn(f"prompt {text!r} is {n_tokens} tokens; the text encoder keeps the first {max_length}",
                              stacklevel=2)
            ids = self.tokenizer(text, padding="max_length", max_length=max_length, truncation=True,
                                 return_tensors="pt").input_ids
            with torch.no_grad():
                hidden = self.text_encoder(ids.to(self.device))[0]
            self._cache[text] = hidden[0].to(self.text_encoder.dtype)
        return self._cache[text]

    def terms(self, terms: dict[str, float]) -> torch.Tensor:
        """A weighted sum of prompts, {text: weight} -> [L, D]."""
        return weighted_sum([self.text(t) for t in terms], list(terms.values()))

    def edit(self, base: str, word: str, value_terms: dict[str, float], occurrence: int | None,
             slots: list[int] | None) -> torch.Tensor:
        """`base` [L, D] with only the slots of `word` replaced by the slot rows of the values.

        Each value's rows come from encoding the base sentence with the value written in place of
        the word, so the rows carry their sentence context.
        """
        start, end = find_word(base, word, occurrence)
        base_slots = slots or slots_in_span(self.tokenizer, base, start, end)
        rows, weights = [], []
        for value, weight in value_terms.items():
            sentence = base[:start] + value + base[end:]
            value_slots = slots or slots_in_span(self.tokenizer, sentence, start, start + len(value))
            if len(value_slots) != len(base_slots):
                raise MorphError(
                    f"edit: {value!r} spans {len(value_slots)} token slot(s) {token_names(self.tokenizer, sentence, value_slots)}"
                    f" but {word!r} spans {len(base_slots)} {token_names(self.tokenizer, base, base_slots)};"
                    " edit values must have as many tokens as the word (see `morph tokens`)")
            rows.append(self.text(sentence)[value_slots])
            weights.append(weight)
        return replace_rows(self.text(base), weighted_sum(rows, weights), torch.tensor(base_slots))


def words_of(sentence: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", sentence)


def find_word(sentence: str, word: str, occurrence: int | None) -> tuple[int, int]:
    """Character span [start, end) of `word` in `sentence` (case-insensitive, whole words only)."""
    spans = [m.span() for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", sentence, re.IGNORECASE)]
    if not spans:
        raise MorphError(f"edit.word: {word!r} does not occur in {sentence!r}; its words are: "
                         f"{', '.join(words_of(sentence))}")
    if occurrence is None:
        if len(spans) > 1:
            raise MorphError(f"edit.word: {word!r} occurs {len(spans)} times in {sentence!r}; "
                             f"add occurrence: N (1 to {len(spans)}) to pick one")
        return spans[0]
    if occurrence > len(spans):
        raise MorphError(f"edit.occurrence: {occurrence} is too large; {word!r} occurs {len(spans)} time(s)")
    return spans[occurrence - 1]


def _offsets(tokenizer, sentence: str):
    encoding = tokenizer(sentence, return_offsets_mapping=True)
    return encoding.input_ids, encoding.offset_mapping


def slots_in_span(tokenizer, sentence: str, start: int, end: int) -> list[int]:
    """Slot indices (BOS = 0) of the tokens that cover characters [start, end) of `sentence`."""
    ids, offsets = _offsets(tokenizer, sentence)
    last = tokenizer.model_max_length - 1
    slots = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start and 0 < i < last]
    if not slots:
        raise MorphError(f"edit: characters {start}..{end} of {sentence!r} fall outside the "
                         f"{tokenizer.model_max_length} token slots the text encoder sees")
    return slots


def token_names(tokenizer, sentence: str, slots: list[int]) -> list[str]:
    ids, _ = _offsets(tokenizer, sentence)
    return [tokenizer.convert_ids_to_tokens(ids[i]) if i < len(ids) else "<pad>" for i in slots]


def slot_table(tokenizer, sentence: str) -> list[tuple[int, str, str]]:
    """(slot index, token, word it belongs to) for BOS, every token and EOS of `sentence`."""
    ids, offsets = _offsets(tokenizer, sentence)
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\w+|[^\w\s]+", sentence)]
    table = []
    for i, (token_id, (a, b)) in enumerate(zip(ids, offsets)):
        word = next((w for s, e, w in words if a < e and b > s), "") if b > a else ""
        table.append((i, tokenizer.convert_ids_to_tokens(token_id), word))
    return table
