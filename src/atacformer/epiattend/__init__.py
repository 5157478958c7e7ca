"""EpiAttend: an Enformer-style transformer over DNA sequence plus single-cell (pseudo-bulk) epigenome
tracks that predicts cell-type expression and links enhancers to genes.

Modules follow the data flow: ``config`` (presets, resolution arithmetic) → ``data`` (FASTA, bigWig /
bedGraph tracks, expression targets) and ``pseudobulk`` (fragments + labels → 128 bp insertion
tracks) → ``windows`` (windows, chromosome splits, augmentation) → ``model`` → ``train`` →
``interpret`` (attributions, enhancer–gene links, baselines). ``simulate`` builds a synthetic genome
with planted enhancer–gene links for validation.
"""

from .config import PRESETS, EpiAttendConfig, get_config
from .data import (
    EpiData,
    GenomeSequence,
    from_simulation,
    gene_targets,
    one_hot,
    read_expression,
    stack_tracks,
)
from .inputs import load_data, read_regions
from .interpret import (
    add_baselines,
    attention_rows,
    gradient_x_input,
    link_auroc,
    link_scores,
    summarize_links,
)
from .model import EpiAttend
from .pseudobulk import pseudobulk_tracks, read_labels, write_bedgraph
from .simulate import GenomeSpec, SimulatedGenome, simulate_genome
from .train import (
    fit,
    load_model,
    pearson,
    predict_genes,
    save_model,
    train_on_chromosomes,
)
from .windows import WindowDataset, centered_windows, split_chromosomes, tile_windows

__all__ = [
    "PRESETS", "EpiAttend", "EpiAttendConfig", "EpiData", "GenomeSequence", "SimulatedGenome", "WindowDataset",
    "add_baselines", "attention_rows", "centered_windows", "fit", "from_simulation", "gene_targets", "get_config",
    "gradient_x_input", "link_auroc", "link_scores", "load_data", "load_model", "read_regions", "train_on_chromosomes",
    "one_hot", "pearson", "predict_genes", "GenomeSpec",
    "pseudobulk_tracks", "read_expression", "read_labels", "save_model", "simulate_genome", "split_chromosomes",
    "stack_tracks", "summarize_links", "tile_windows", "write_bedgraph",
]
