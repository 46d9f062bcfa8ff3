"""Tokenizers for multilingual pretraining: train a byte-level BPE on the corpus, or load one.

A trained tokenizer is a Hugging Face ``tokenizers`` byte-level BPE (every byte is in the
alphabet, so no script is ever unknown) trained on a language-balanced sample of the corpus: the
first ``documents_per_language`` documents of every language, interleaved. It is wrapped as a
``transformers`` fast tokenizer with ``<s>`` (bos), ``</s>`` (eos), ``<pad>`` and ``<unk>``, and
prepends ``<s>`` to every text like Llama's; ``save_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` round-trip. An existing tokenizer is loaded from a local
folder with ``AutoTokenizer`` (``trust_remote_code=False``).

A tokenizer that cannot encode a language's script maps its text to the unknown token:
:func:`unknown_token_rates` measures that share per language and :func:`check_tokenizer_coverage`
refuses a tokenizer above a threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field

from phasescope.data.corpora import CorpusSource, sample_documents
from phasescope.errors import PhasescopeError
from phasescope.progress import progress_bar
from phasescope.run.config import StrictModel

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"


class TokenizerConfig(StrictModel):
    """Which tokenizer a run uses: an existing one (``path``) or a BPE trained on the corpus."""

    path: Path | None = None  # a local tokenizer folder (AutoTokenizer); None: train a byte-level BPE
    # 4096 suits the built-in corpus (~1,300 distinct words) and keeps a tiny model's embedding small;
    # real corpora want 32k-64k
    vocab_size: int = Field(4096, ge=300)
    documents_per_language: int = Field(2000, ge=1)  # the training sample: this many documents of each language
    min_frequency: int = Field(2, ge=1)  # a merge must occur this often in the sample
    max_unknown_rate: float = Field(0.01, ge=0, le=1)  # refuse a tokenizer that maps more of a language to <unk>


def train_bpe_tokenizer(corpus: CorpusSource, vocab_size: int = 4096, documents_per_language: int = 2000,
                        min_frequency: int = 2, languages: Iterable[str] | None = None):
    """A byte-level BPE trained on a language-balanced sample of ``corpus``.

    Args:
        corpus: any :class:`~phasescope.data.corpora.CorpusSource`; its train split is sampled.
        vocab_size: the vocabulary size, special tokens and the 256 byte symbols included.
        documents_per_language: the first this-many documents of each language are the sample.
        min_frequency: the least count of a pair in the sample for it to be merged.
        languages: the languages to sample (default: the corpus's).

    Returns:
        A ``transformers`` fast tokenizer with bos ``<s>`` (prepended to every text), eos ``</s>``,
        pad ``<pad>`` and unk ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    sample = sample_documents(corpus, documents_per_language, "train", languages)
    empty = [language for language, documents in sample.items() if not documents]
    if empty:
        raise PhasescopeError(f"no training documents for the tokenizer in language(s) {', '.join(empty)}")
    total = sum(len(documents) for documents in sample.values())
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[PAD, BOS, EOS, UNK], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    with progress_bar("tokenizer sample", total) as advance:
        def interleaved() -> Iterator[str]:  # round robin over languages: balanced at every prefix
            for position in range(max(len(documents) for documents in sample.values())):
                for documents in sample.values():
                    if position < len(documents):
                        advance()
                        yield documents[position]

        tokenizer.train_from_iterator(interleaved(), trainer=trainer, length=total)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                             special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK)


def load_tokenizer(path: Path | str):
    """A tokenizer saved in a local folder (``save_pretrained``), loaded without remote code.

    A tokenizer without a pad token gets its eos token as pad (GPT-2 style).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise PhasescopeError(f"tokenizer folder {path} does not exist (expected a folder written by save_pretrained)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as error:
        raise PhasescopeError(f"{path}: cannot load a tokenizer ({' '.join(str(error).split())[:160]})") from None
    if tokenizer.eos_token_id is None:
        raise PhasescopeError(f"{path}: the tokenizer has no eos token; packed documents need one to end them")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_tokenizer(config: TokenizerConfig, corpus: CorpusSource):
    """The tokenizer of ``config``: loaded from ``path``, or trained on ``corpus``; coverage-checked."""
    if config.path is not None:
        tokenizer = load_tokenizer(config.path)
    else:
        tokenizer = train_bpe_tokenizer(corpus, config.vocab_size, config.documents_per_language,
                                        config.min_frequency)
    check_tokenizer_coverage(tokenizer, sample_documents(corpus, 50), config.max_unknown_rate)
    return tokenizer


def unknown_token_rates(tokenizer, samples: dict[str, list[str]] | CorpusSource,
                        documents_per_language: int = 50) -> dict[str, float]:
    """The share of each language's tokens that are the unknown token.

    Args:
        tokenizer: a ``transformers`` tokenizer.
        samples: documents per language, or a corpus (its first ``documents_per_language`` train
            documents of each language are used).

    Returns:
        ``{language: unknown tokens / tokens}``; 0 for a tokenizer without an unknown token
        (byte-level BPE, which encodes any text).
    """
    if not isinstance(samples, dict):
        samples = sample_documents(samples, documents_per_language)
    unknown_id = tokenizer.unk_token_id
    rates = {}
    for language, documents in samples.items():
        documents = [text for text in documents if text]
        if not documents:
            raise PhasescopeError(f"no sample text in language {language!r} to measure the tokenizer on")
        ids = [i for encoded in tokenizer(documents, add_special_tokens=False)["input_ids"] for i in encoded]
        rates[language] = (sum(i == unknown_id for i in ids) / len(ids)) if ids and unknown_id is not None else 0.0
    return rates


def check_tokenizer_coverage(tokenizer, samples: dict[str, list[str]] | CorpusSource,
                             max_unknown_rate: float = 0.01) -> dict[str, float]:
    """:func:`unknown_token_rates`, raising if a language's rate exceeds ``max_unknown_rate``."""
    rates = unknown_token_rates(tokenizer, samples)
    bad = {language: rate for language, rate in rates.items() if rate > max_unknown_rate}
    if bad:
        listed = ", ".join(f"{language} {rate:.1%}" for language, rate in bad.items())
        raise PhasescopeError(f"the tokenizer cannot encode these languages' text: {listed} of tokens are unknown "
                              f"({tokenizer.unk_token}), above the limit {max_unknown_rate:.1%}")
    return rates
