"""Vocabulary, cell sentences and the sharded on-disk corpus.

>>> info = write_corpus(["cells.h5ad"], "corpus/")          # Parquet shards + vocab.json + corpus.json
>>> ds = CorpusDataset("corpus/", shuffle=True, seed=0)       # streaming torch IterableDataset
>>> next(iter(ds))["bin_ids"]                                 # all open global bin ids of a cell
"""

from .corpus import Corpus, CorpusInfo, ShardInfo
from .sentences import DEFAULT_MAX_LENGTH, cell_sentence, iter_sentences, open_bins, sorted_unique
from .vocab import CLS_ID, PAD_ID, BinVocab
from .writer import DEFAULT_OBS_COLUMNS, write_corpus

__all__ = [
    "BinVocab",
    "CLS_ID",
    "PAD_ID",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_OBS_COLUMNS",
    "cell_sentence",
    "iter_sentences",
    "open_bins",
    "sorted_unique",
    "write_corpus",
    "Corpus",
    "CorpusInfo",
    "ShardInfo",
    "CorpusDataset",
    "AnnDataCellDataset",
]


def __getattr__(name):  # the torch datasets load lazily so `atacformer ingest/tokenize` never import torch
    if name in ("AnnDataCellDataset", "CorpusDataset"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
