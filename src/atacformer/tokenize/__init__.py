"""Vocabulary, cell sentences and the sharded on-disk corpus."""

from .sentences import DEFAULT_MAX_LENGTH, cell_sentence, iter_sentences, open_bins
from .vocab import CLS_ID, PAD_ID, BinVocab

__all__ = ["BinVocab", "CLS_ID", "PAD_ID", "DEFAULT_MAX_LENGTH", "cell_sentence", "iter_sentences", "open_bins"]
