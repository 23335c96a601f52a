"""Byte-level BPE tokenizers trained offline on the synthetic alt-text vocabulary, for the tiny
checkpoints whose real vocabulary no registry package ships."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from mcmdpo.data.synthetic import tokenizer_corpus

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]


def train_bpe(vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """Byte-level BPE (never an unknown character) trained on the synthetic vocabulary, with
    ``special_tokens`` first."""
    backend = Tokenizer(models.BPE(unk_token=special_tokens[0]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return backend


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """The plain tiny LLaVA's tokenizer: :func:`train_bpe` with LLaMA's special tokens and a BOS."""
    backend = train_bpe(vocab_size, SPECIAL_TOKENS)
    bos_id = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=2048,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
