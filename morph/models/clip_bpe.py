"""Stable Diffusion 1.x's CLIP tokenizer, offline: built from the BPE vocabulary shipped in morph/data.

The file is OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz` as open_clip_torch 3.3.0 ships it (MIT;
the licence is beside it). The vocabulary is laid out the way CLIP's SimpleTokenizer builds it —
256 byte symbols, the same with an end-of-word mark, 48,894 merges, then the two special tokens:
49,408 ids, the same as `openai/clip-vit-large-patch14`'s vocab.json, which SD 1.x uses.
"""

import gzip
from functools import cache
from pathlib import Path

VOCAB_FILE = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # what CLIP keeps of the file's merges
MAX_LENGTH = 77
TEXT_WIDTH = 768  # channels of CLIP ViT-L/14's text encoder, which every SD 1.x model pairs with this tokenizer


@cache
def sd15_tokenizer():
    """A transformers CLIPTokenizer identical to Stable Diffusion 1.x's, padding to 77 slots."""
    from transformers import CLIPTokenizer

    from .tiny import bytes_to_unicode

    lines = gzip.open(VOCAB_FILE, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    mapping = bytes_to_unicode()
    # CLIP lists the printable bytes (those that stand for themselves) first, then the rest
    symbols = [mapping[b] for b in sorted(mapping, key=lambda b: (mapping[b] != chr(b), b))]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=MAX_LENGTH,
                         pad_token="<|endoftext|>")
