"""Tools (scanpy style: ``adata`` first, keyword options, results under ``key_added``, ``copy=False`` →
``None``).

embed (cell or region-set embeddings), cluster/umap, lsi/spectral (baselines), evaluate (the scoring
protocol), finetune/annotate (<cls> heads for any label columns; ``finetune`` returns the fine-tuned model),
similar_sets (nearest region sets), map_query (reference mapping), integrate (adversarial batch correction +
MNN correction; ``integrate_model`` returns the corrected model), mnn_correct,
region_embeddings/specific_regions/unannotated_promoters (contextual region analysis).
"""

from .annotate import annotate, finetune
from .baselines import lsi, spectral
from .cluster import cluster, umap
from .craft import craft_embed, craft_train, impute_rna, transfer_labels
from .embed import embed
from .evaluate import evaluate, write_evaluation
from .integrate import integrate, integrate_model, map_query
from .mnn import mnn_correct
from .regions import (
    annotate_bins,
    region_embeddings,
    specific_regions,
    unannotated_promoters,
)
from .similar import similar_sets

__all__ = [
    "annotate", "annotate_bins", "cluster", "craft_embed", "craft_train", "embed", "evaluate", "finetune",
    "impute_rna", "integrate", "integrate_model", "lsi", "map_query", "mnn_correct", "region_embeddings",
    "similar_sets", "specific_regions", "spectral", "transfer_labels", "umap", "unannotated_promoters",
    "write_evaluation",
]
