"""Tools (scanpy style: ``adata`` first, keyword options, results under ``key_added``).

embed (cell embeddings), cluster/umap, finetune/annotate (cell-type heads), map_query (reference
mapping), integrate (adversarial batch correction + MNN correction), region_embeddings/specific_regions/
unannotated_promoters (contextual region analysis); lsi/spectral baselines re-exported from metrics.
"""

from ..metrics.baselines import lsi, spectral
from .annotate import annotate, finetune
from .cluster import cluster, umap
from .embed import embed
from .integrate import integrate, map_query
from .mnn import mnn_correct
from .regions import (
    annotate_bins,
    region_embeddings,
    specific_regions,
    unannotated_promoters,
)

__all__ = [
    "annotate", "annotate_bins", "cluster", "embed", "finetune", "integrate", "lsi", "map_query", "mnn_correct",
    "region_embeddings",
    "specific_regions", "spectral", "umap", "unannotated_promoters",
]
