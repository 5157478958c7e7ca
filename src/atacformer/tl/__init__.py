"""Tools (scanpy style: ``adata`` first, keyword options, results under ``key_added``, ``copy=False`` → None).

embed (cell embeddings), cluster/umap, finetune/annotate (cell-type heads; ``finetune`` returns the
fine-tuned model), map_query (reference mapping), integrate (adversarial batch correction + MNN
correction), region_embeddings/specific_regions/unannotated_promoters (contextual region analysis);
lsi/spectral baselines.
"""

from ..metrics.baselines import lsi, spectral
from .annotate import annotate, finetune
from .cluster import cluster, umap
from .craft import craft_embed, craft_train, impute_rna, transfer_labels
from .embed import embed
from .integrate import integrate, integrate_model, map_query
from .mnn import mnn_correct
from .regions import (
    annotate_bins,
    region_embeddings,
    specific_regions,
    unannotated_promoters,
)

__all__ = [
    "annotate", "annotate_bins", "cluster", "craft_embed", "craft_train", "embed", "finetune", "impute_rna",
    "integrate", "integrate_model", "lsi", "map_query", "mnn_correct", "region_embeddings", "specific_regions", "spectral", "transfer_labels", "umap",
    "unannotated_promoters",
]
