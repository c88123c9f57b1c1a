"""Text columns to token ids [N, max_length] (id 0 pads), for the csv and hf_dataset sources.

`word`: lower-cased words (runs of letters and digits); the vocabulary is the training split's most
frequent words (ids 2...; 1 is unknown). `hf`: a Hugging Face tokenizer read from a local directory
(`save_pretrained`), never from the hub, so text can feed a pretrained `hf` encoder."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenarios.errors import DataError

PAD, UNK = 0, 1
MIN_WORD_VOCAB = 3  # padding, unknown and one word: with fewer, every word is unknown
MAX_LENGTH = 2**16  # tokens per text: every text becomes an array of this many ids
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass
class TokenizerParams:
    kind: str = "word"  # word | hf
    path: str | None = None  # hf: a local tokenizer directory (save_pretrained)
    max_length: int = 32  # tokens kept per text (longer ones are cut, shorter ones padded)
    vocab_size: int = 20000  # word: at most this many ids, padding and unknown included
    lowercase: bool = True  # word: lowercase before splitting into words


def tokenize(train: np.ndarray, test: np.ndarray, params: TokenizerParams, key: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(train ids, test ids, vocabulary size) for object arrays of strings."""
    if not 1 <= params.max_length <= MAX_LENGTH:
        raise DataError(f"{key}max_length: must lie in 1..{MAX_LENGTH}, got {params.max_length}")
    if params.kind == "word":
        if params.vocab_size < MIN_WORD_VOCAB:
            raise DataError(f"{key}vocab_size: must be at least {MIN_WORD_VOCAB} (padding, unknown and one word), got {params.vocab_size}")
        return _word(train, test, params)
    if params.kind == "hf":
        return _hf(train, test, params, key)
    raise DataError(f"{key}kind: unknown tokenizer '{params.kind}'; use word or hf")


def _words(text: str, lowercase: bool) -> list[str]:
    return _WORD.findall(text.lower() if lowercase else text)


def _word(train: np.ndarray, test: np.ndarray, params: TokenizerParams) -> tuple[np.ndarray, np.ndarray, int]:
    counts = Counter(w for t in train for w in _words(str(t), params.lowercase))
    keep = sorted(counts, key=lambda w: (-counts[w], w))[: max(0, params.vocab_size - 2)]
    vocab = {w: i + 2 for i, w in enumerate(keep)}

    def encode(texts: np.ndarray) -> np.ndarray:
        out = np.zeros((len(texts), params.max_length), dtype=np.int64)
        for i, t in enumerate(texts):
            ids = [vocab.get(w, UNK) for w in _words(str(t), params.lowercase)][: params.max_length]
            out[i, : len(ids)] = ids
        return out

    return encode(train), encode(test), len(vocab) + 2


def _hf(train: np.ndarray, test: np.ndarray, params: TokenizerParams, key: str) -> tuple[np.ndarray, np.ndarray, int]:
    from scenarios.offline import hf_offline
    from scenarios.sources.hf_folder import folder_problem

    hf_offline()
    if not params.path:
        raise DataError(f"{key}path: a local tokenizer directory is needed (nothing is downloaded), got '{params.path}'")
    folder = Path(params.path).expanduser()
    problem = folder_problem(folder, needs=None)
    if problem:
        raise DataError(f"{key}path: {problem}")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as err:  # transformers and tokenizers fail in many ways on a folder that is not a tokenizer
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise DataError(f"{key}path: cannot load a tokenizer from {folder} ({type(err).__name__}: {detail})") from None

    def encode(texts: np.ndarray) -> np.ndarray:
        enc = tok([str(t) for t in texts], padding="max_length", truncation=True, max_length=params.max_length)
        return np.asarray(enc["input_ids"], dtype=np.int64)

    return encode(train), encode(test), len(tok)
