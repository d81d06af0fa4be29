"""Tokenizers: any Hugging Face tokenizer, a BPE trained on a corpus, or a toy word-level one.

Special tokens are explicit: ``pad`` (also the learned diffusion padding), ``bos``, ``eos`` and
T5-style sentinels ``<extra_id_i>`` for span corruption.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ar2diff.errors import Ar2DiffError

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"


def sentinel(i: int) -> str:
    return f"<extra_id_{i}>"


def _specials(n_sentinels: int) -> list[str]:
    return [PAD, BOS, EOS, UNK] + [sentinel(i) for i in range(n_sentinels)]


def _wrap(tok: Tokenizer, n_sentinels: int) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        additional_special_tokens=[sentinel(i) for i in range(n_sentinels)],
    )


def train_bpe(texts: Iterable[str], vocab_size: int, n_sentinels: int = 100) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` (ids 0..3 are pad, bos, eos, unk)."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=_specials(n_sentinels),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_chunks(texts), trainer=trainer)
    return _wrap(tok, n_sentinels)


def _chunks(texts: Iterable[str], size: int = 4096) -> Iterator[str]:
    for text in texts:
        for i in range(0, len(text), size):
            yield text[i : i + size]


def word_level(words: Iterable[str], n_sentinels: int = 0) -> PreTrainedTokenizerFast:
    """A whitespace-split tokenizer over a fixed word list (for toy sequence tasks)."""
    vocab = {w: i for i, w in enumerate(_specials(n_sentinels))}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return _wrap(tok, n_sentinels)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """``pad``, ``bos`` and ``eos`` ids; a missing pad falls back to eos, a missing bos to eos."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise Ar2DiffError("the tokenizer has no end-of-sequence token; set tokenizer.eos_token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    return {"pad": int(pad), "bos": int(bos), "eos": int(eos)}


def sentinel_ids(tokenizer: PreTrainedTokenizerBase, n: int) -> list[int]:
    """Ids of the first ``n`` sentinel tokens, which span corruption needs."""
    ids = tokenizer.convert_tokens_to_ids([sentinel(i) for i in range(n)])
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise Ar2DiffError(
            f"the tokenizer lacks the sentinel tokens <extra_id_0>…<extra_id_{n - 1}> needed for "
            "span corruption; use a T5-style tokenizer or objective.format=prefix"
        )
    return list(ids)


PROMPT_FORMATS = ("raw", "chat")


def encode_prompt_text(tokenizer: PreTrainedTokenizerBase, text: str, prompt_format: str) -> list[int]:
    """A prompt's ids in ``prompt_format``: ``raw`` (the text itself) or ``chat`` (one user turn
    through the tokenizer's chat template, ready for the reply). Training and decoding both
    encode through here, so a model sees its prompts as it was trained on them."""
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise Ar2DiffError("prompt format chat: this tokenizer has no chat template; use raw "
                               "prompts (data.prompt_format=raw, --no-chat)")
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    elif prompt_format != "raw":
        raise Ar2DiffError(f"prompt format {prompt_format!r}: choose raw or chat")
    return tokenizer.encode(text, add_special_tokens=False)
