"""Prompt texts -> conditioning tensors [L, D]. The only module that touches the tokenizer and text encoder."""

import re
import warnings
from contextlib import contextmanager

import torch

from ..errors import MorphError
from ..models.family import family_of, pooled_dim
from .ops import weighted_sum


class PromptEncoder:
    """Encodes each distinct text once, the way the family's pipeline encodes a prompt, and combines them.

    `pairs`: (tokenizer, text encoder) of each encoder whose hidden states are laid side by side
    (SDXL: two). `penultimate`: SDXL takes the last-but-one hidden state. `pooled`: channels of the
    last encoder's pooled projection, carried as an extra last row (see family.py). `loras`: the
    pipeline's lora.LoraStrengths, when LoRAs change its text encoders (see `lora_scales`).
    """

    def __init__(self, pairs, penultimate: bool = False, pooled: int | None = None, zero_empty_negative: bool = False,
                 expand=None, loras=None):
        self.pairs, self.penultimate, self.pooled = list(pairs), penultimate, pooled
        self.expand = expand or (lambda text, tokenizer: text)  # a textual-inversion token of n vectors -> n tokens
        self.zero_empty_negative = zero_empty_negative
        widths = [encoder.config.hidden_size for _, encoder in self.pairs]
        self.columns = [slice(sum(widths[:i]), sum(widths[:i + 1])) for i in range(len(widths))]
        self.loras = loras if loras is not None and loras.in_text else None
        self._scales = tuple(self.loras.defaults.tolist()) if self.loras else ()  # the text encoders' LoRA strengths
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.pairs[0][1].device

    @contextmanager
    def lora_scales(self, scales: list[float]):
        """Inside: prompts are encoded with the text encoders' LoRAs at `scales` [n] (a keyframe's own strengths)."""
        if self.loras is None:
            yield
            return
        before, self._scales = self._scales, tuple(scales)
        try:
            with self.loras.text(scales):
                yield
        finally:
            self._scales = before

    def text(self, text: str) -> torch.Tensor:
        """The full hidden-state tensor of one prompt, padding slots included: [L, D] (SDXL: [L + 1, D])."""
        if (self._scales, text) not in self._cache:
            parts, pooled = [], None
            for tokenizer, encoder in self.pairs:
                max_length = tokenizer.model_max_length
                expanded = self.expand(text, tokenizer)
                n_tokens = len(tokenizer(expanded).input_ids)
                if n_tokens > max_length:
                    warnings.warn(f"prompt {text!r} is {n_tokens} tokens; the text encoder keeps the first "
                                  f"{max_length}", stacklevel=2)
                ids = tokenizer(expanded, padding="max_length", max_length=max_length, truncation=True,
                                return_tensors="pt").input_ids
                with torch.no_grad():
                    out = encoder(ids.to(self.device), output_hidden_states=self.penultimate)
                parts.append(out.hidden_states[-2][0] if self.penultimate else out[0][0])
                pooled = out[0][0]  # SDXL: the last encoder's text_embeds
            hidden = torch.cat(parts, dim=-1)
            if self.pooled:
                row = torch.zeros(1, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
                row[0, :self.pooled] = pooled
                hidden = torch.cat([hidden, row])
            self._cache[self._scales, text] = hidden.to(self.pairs[0][1].dtype)
        return self._cache[self._scales, text]

    def negative(self, text: str) -> torch.Tensor:
        """The negative prompt's tensor; an empty one is all zeros where the pipeline does that (SDXL)."""
        return torch.zeros_like(self.text(text)) if not text and self.zero_empty_negative else self.text(text)

    def terms(self, terms: dict[str, float]) -> torch.Tensor:
        """A weighted sum of prompts, {text: weight} -> [L, D]."""
        return weighted_sum([self.text(t) for t in terms], list(terms.values()))

    def edit(self, base: str, word: str, value_terms: dict[str, float], occurrence: int | None,
             slots: list[int] | None) -> torch.Tensor:
        """`base` [L, D] with only the slots of `word` replaced by the slot rows of the values.

        Each value's rows come from encoding the base sentence with the value written in place of
        the word, so the rows carry their sentence context. With two encoders (SDXL) each finds the
        word's slots with its own tokenizer and replaces them in its own channels; the pooled row
        becomes the values' sentences' pooled vectors, weighted alike.
        """
        start, end = find_word(base, word, occurrence)
        edited = self.text(base).clone()
        sentences = {value: base[:start] + value + base[end:] for value in value_terms}
        weights = list(value_terms.values())
        for (tokenizer, _), columns in zip(self.pairs, self.columns):
            base_slots = slots or slots_in_span(tokenizer, base, start, end)
            rows = []
            for value, sentence in sentences.items():
                value_slots = slots or slots_in_span(tokenizer, sentence, start, start + len(value))
                if len(value_slots) != len(base_slots):
                    raise MorphError(
                        f"edit: {value!r} spans {len(value_slots)} token slot(s) "
                        f"{token_names(tokenizer, sentence, value_slots)} but {word!r} spans {len(base_slots)} "
                        f"{token_names(tokenizer, base, base_slots)}; edit values must have as many tokens as the "
                        "word (see `morph tokens`)")
                rows.append(self.text(sentence)[value_slots, columns])
            edited[base_slots, columns] = weighted_sum(rows, weights)
        if self.pooled:
            edited[-1] = weighted_sum([self.text(s)[-1] for s in sentences.values()], weights)
        return edited


def prompt_encoder(pipe, loras=None) -> PromptEncoder:
    """The family's prompt encoder for a loaded pipeline (with its lora.LoraStrengths, if it has LoRAs)."""
    expand = getattr(pipe, "maybe_convert_prompt", None)
    if family_of(pipe) == "sdxl":
        return PromptEncoder([(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)],
                             penultimate=True, pooled=pooled_dim(pipe),
                             zero_empty_negative=pipe.config.force_zeros_for_empty_prompt, expand=expand, loras=loras)
    return PromptEncoder([(pipe.tokenizer, pipe.text_encoder)], expand=expand, loras=loras)


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
        word = "".join(w for s, e, w in words if a < e and b > s) if b > a else ""  # "<sparkle>": one token
        table.append((i, tokenizer.convert_ids_to_tokens(token_id), word))
    return table


def word_slots(tokenizer, sentence: str) -> tuple[list[tuple[str, list[int]]], int]:
    """Each word of `sentence` (as words_of splits it) with the token slots it covers (BOS = 0), and the EOS slot.
    A token that spans two words ("can't") joins them into one; words cut off by the tokenizer's length are left
    out."""
    ids, offsets = _offsets(tokenizer, sentence)
    last = tokenizer.model_max_length - 1
    words, claimed = [], set()
    for match in re.finditer(r"\w+|[^\w\s]+", sentence):
        slots = [i for i, (a, b) in enumerate(offsets) if b > a and a < match.end() and b > match.start() and 0 < i < last]
        if slots and set(slots) <= claimed and words:
            words[-1] = (words[-1][0] + match.group(), words[-1][1])
        elif slots:
            words.append((match.group(), [i for i in slots if i not in claimed]))
            claimed.update(slots)
    return words, min(len(ids) - 1, last)
