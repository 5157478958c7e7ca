"""atacformer: a transformer foundation model for single-cell chromatin accessibility.

Data flow: ``io`` (readers/writers) → ``pp`` (binning, QC) → ``tokenize`` (vocabulary, cell sentences,
sharded corpus) → ``models`` → ``train`` → ``tl`` (embed, cluster, annotate, integrate, regions) →
``pl`` (plots) → ``metrics``. ``dna`` builds per-bin DNA embedding tables; ``epiattend`` is the
sequence + epigenome model.
"""

from importlib import import_module

from .genome import BinIndex, Genome, get_genome

__version__ = "0.1.0"
__all__ = ["BinIndex", "Genome", "get_genome", "io", "pp", "tokenize", "models", "train", "tl", "pl", "metrics",
           "datasets"]


def __getattr__(name):  # lazy subpackages: `import atacformer as af; af.tl.embed(...)` without importing torch eagerly
    if name in {"io", "pp", "tokenize", "models", "train", "tl", "pl", "metrics", "dna", "epiattend", "datasets"}:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'atacformer' has no attribute {name!r}")
