"""The shipped SNARE-seq adult mouse cortex (mm10): RNA and ATAC of the same 6,968 nuclei, 8 libraries.

See ``data/ATTRIBUTION.md`` section 6 (Chen, Lake & Zhang 2019; via scMoMaT, MIT). Re-exported as
``atacformer.datasets.snareseq``.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .genome import DEFAULT_BIN_SIZE, data_path
from .io.regions import read_region_matrix

GENOME = "mm10"


def _read(name: str) -> ad.AnnData:
    adata = ad.read_h5ad(data_path("snareseq", f"{name}.h5ad"))
    adata.X = sp.csr_matrix(adata.X, dtype=np.int32)  # stored as uint8 (ATAC) / uint16 (RNA)
    for col in ("batch", "cell_type", "cell_type_coarse"):
        adata.obs[col] = adata.obs[col].astype(str).astype("category")
    return adata


def snareseq(*, bin_size: int | None = DEFAULT_BIN_SIZE) -> tuple[ad.AnnData, ad.AnnData]:
    """Paired SNARE-seq cells: ``(atac, rna)`` with the same ``obs_names`` in the same order.

    Parameters
    ----------
    bin_size
        ATAC regions are re-binned to mm10 bins of this size (each region's counts go to the bin holding
        its midpoint, as :func:`atacformer.io.read_region_matrix` does). ``None`` returns the 25,734
        gene-linked regions as shipped (``var``: ``chr``, ``start``, ``end``, ``linked_gene``).

    Returns
    -------
    atac
        Cells × bins (or regions) int32 counts; ``obs``: ``batch`` (library 09A–09H), ``cell_type``
        (23 fine types), ``cell_type_coarse`` (15), ``barcode``.
    rna
        Cells × 1,677 genes (symbols), int32 UMI counts, the same ``obs``.
    """
    regions, rna = _read("atac"), _read("rna")
    if bin_size is None:
        return regions, rna
    atac = read_region_matrix(regions, genome=GENOME, bin_size=int(bin_size))
    return atac, rna
