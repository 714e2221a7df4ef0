"""Byte-level BPE tokenizer shared by every text task (GPT-2 style, via the `tokenizers` library).

Bytes are the base alphabet, so any Unicode string encodes and decode(encode(x)) == x. There is no
normaliser and no added prefix space, which would break that round trip. Every digit is a token of its
own: BPE would otherwise cut numbers wherever its merges happen to fall ("895" -> "8" "95", "2129" ->
"2" "12" "9"), and arithmetic and counting answers would have no consistent digits to work with.
The special tokens come first, at fixed ids, because the model and the chat/summarize templates
refer to them by id.
"""

import json
from pathlib import Path
from typing import Iterable, Iterator

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>",
                  "<|end|>", "<|summarize|>", "<|summary|>"]
VOCAB_SIZE = {"full": 8192, "small": 2048}


def pre_tokenizer():
    """Text -> the pieces BPE merges within: GPT-2's byte-level split, then each digit alone."""
    from tokenizers import pre_tokenizers
    return pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(add_prefix_space=False),
                                    pre_tokenizers.Digits(individual_digits=True)])


def split_digits(tok) -> bool:
    """Give a trained tokenizer this module's pre_tokenizer; True if that changed how it splits text.
    The vocabulary and ids stay the same, and single digits are in every byte-level vocabulary, so
    a checkpoint keeps its embeddings; only numbers are read digit by digit from then on."""
    before = tok.to_str()
    tok.pre_tokenizer = pre_tokenizer()
    return tok.to_str() != before


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE on `texts`; special tokens get ids 0..len(SPECIAL_TOKENS)-1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def training_texts(text_dir: Path) -> Iterator[str]:
    """Corpus lines, then summarization documents and summaries, then chat turns (train only)."""
    with open(text_dir / "corpus.txt", encoding="utf-8") as f:
        yield from (line.rstrip("\n") for line in f)
    with open(text_dir / "summarize_train.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            yield row["document"]
            yield row["summary"]
    with open(text_dir / "chat_train.jsonl", encoding="utf-8") as f:
        for line in f:
            yield from (m["content"] for m in json.loads(line)["messages"])


def build(out: Path, small: bool) -> dict:
    """Write DIR/tokenizer/tokenizer.json from DIR/text; returns counts for build.json."""
    tok = train_tokenizer(training_texts(out / "text"), VOCAB_SIZE["small" if small else "full"])
    root = out / "tokenizer"
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    sample = (out / "text" / "corpus.txt").read_text(encoding="utf-8")[:200000]
    ratio = len(sample.encode("utf-8")) / max(1, len(tok.encode(sample).ids))
    (root / "DATASET_CARD.md").write_text(
        f"# fm_multi tokenizer\n\nByte-level BPE, one token per digit (tokenizers {__import__('tokenizers').__version__}), "
        f"vocabulary {tok.get_vocab_size()} (target {VOCAB_SIZE['small' if small else 'full']}), trained on "
        f"text/corpus.txt, summarize_train.jsonl and chat_train.jsonl. Special tokens at ids 0-"
        f"{len(SPECIAL_TOKENS) - 1}: {', '.join(f'`{t}`' for t in SPECIAL_TOKENS)}. About {ratio:.2f} bytes "
        f"per token on the corpus. Load with `tokenizers.Tokenizer.from_file('tokenizer.json')`.\n",
        encoding="utf-8")
    return {"vocab_size": tok.get_vocab_size(), "bytes_per_token": round(ratio, 3)}
