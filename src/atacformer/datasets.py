"""The example data shipped inside the package, as AnnData objects or file paths.

Everything here reads files from ``atacformer/data`` (sources, licences and conversions in
``atacformer/data/ATTRIBUTION.md``); nothing is downloaded. Each call reads the files again, so the
returned objects are the caller's to modify.

========================  =====================================================================
helper                    what
========================  =====================================================================
:func:`hemato`            600 human bone-marrow cells (10x scATAC, hg19), 6 cell types, 2 donors
:func:`pbsmall`           150 PBMCs from ArchR's PBSmall fragments (hg19, chr5 + chr11), 3 types
:func:`pbsmall_fragments` path of the PBSmall 10x fragment file (and :func:`pbsmall_labels`)
:func:`demo_cells`        the demo's 750 training cells: PBSmall + hemato in one AnnData (hg19)
:func:`pbmc_multiome`     100 PBMCs with paired ATAC and RNA (10x Multiome subset, GRCh38)
========================  =====================================================================

Example::

    import atacformer as af
    adata = af.datasets.hemato()          # 600 cells × 607,271 hg19 5 kb bins
    adata.obs[["cell_type", "donor"]].value_counts()
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from .genome import DEFAULT_BIN_SIZE, data_path

__all__ = ["hemato", "pbsmall", "pbsmall_fragments", "pbsmall_labels", "demo_cells", "pbmc_multiome", "snareseq"]

HEMATO_FILE = "hemato_10x_hg19.h5ad"
PBSMALL_FRAGMENTS_FILE = "pbsmall_fragments_hg19.tsv.gz"
PBSMALL_LABELS_FILE = "pbsmall_labels.tsv"
MULTIOME_ATAC_FILE = "pbmc_multiome_subset_grch38_atac.h5ad"
MULTIOME_RNA_FILE = "pbmc_multiome_subset_grch38_rna.h5ad"


def _shipped(name: str) -> Path:
    path = data_path(name)
    if not path.exists():
        raise FileNotFoundError(f"shipped data file {name} is missing from {path.parent}: reinstall atacformer")
    return path


def hemato(*, bin_size: int | None = DEFAULT_BIN_SIZE) -> ad.AnnData:
    """Human bone-marrow scATAC-seq (Granja et al. 2019, via epiCHAOS): 600 cells, hg19.

    The 10x peak matrix (5,000 peaks of 501 bp) re-binned to genome-wide hg19 bins: each peak's counts
    go to the bin holding its midpoint (:func:`atacformer.io.read_region_matrix`).

    Parameters
    ----------
    bin_size
        Bin size in bp (default 5,000). ``None`` returns the peak matrix as shipped
        (600 × 5,000 peaks, ``var`` with ``chrom``, ``start``, ``end``).

    Returns
    -------
    AnnData
        Cells × bins, ``X`` CSR int32 counts; ``obs['cell_type']`` (6 types, 100 cells each:
        ``01_HSC``, ``05_CMP.LMPP``, ``07_GMP``, ``15_CLP.2``, ``17_B``, ``19_CD8.N``),
        ``obs['donor']`` (``BMMC_D6T1`` 492 cells, ``BMMC_D5T1`` 108), ``obs['barcode']`` and the
        source QC columns; ``uns`` has ``genome`` (``'hg19'``), ``bin_size`` and ``chrom_sizes``.
    """
    path = _shipped(HEMATO_FILE)
    if bin_size is None:
        return ad.read_h5ad(path)
    from .io import read_region_matrix

    return read_region_matrix(path, genome="hg19", bin_size=bin_size)


def pbsmall_fragments() -> Path:
    """Path of ArchR's PBSmall 10x fragment file (hg19, chr5 + chr11, 150 barcodes, 29,399 fragments).

    Returns
    -------
    Path
        ``pbsmall_fragments_hg19.tsv.gz`` (BGZF, sorted, with a ``.tbi`` index beside it; 5 columns
        ``chrom start end barcode count``, 0-based half-open).
    """
    return _shipped(PBSMALL_FRAGMENTS_FILE)


def pbsmall_labels() -> Path:
    """Path of the PBSmall cell-type table (``barcode<TAB>cell_type``, header line; B, Monocyte, T).

    Returns
    -------
    Path
        ``pbsmall_labels.tsv``, usable as ``labels=`` / ``--labels``.
    """
    return _shipped(PBSMALL_LABELS_FILE)


def pbsmall(*, bin_size: int = DEFAULT_BIN_SIZE) -> ad.AnnData:
    """ArchR's PBSmall PBMCs: the shipped fragments binned to genome-wide hg19 bins, with labels.

    Parameters
    ----------
    bin_size
        Bin size in bp (default 5,000).

    Returns
    -------
    AnnData
        150 cells × bins (``X`` CSR int32 Tn5 insertion counts), ``obs['cell_type']`` (B, Monocyte, T;
        50 each) and the per-cell QC columns of :func:`atacformer.io.read_fragments` (every barcode is
        kept: ``min_fragments=1``).
    """
    from .io import read_fragments

    return read_fragments(pbsmall_fragments(), genome="hg19", bin_size=bin_size, labels=pbsmall_labels(),
                          min_fragments=1)


def demo_cells(*, bin_size: int = DEFAULT_BIN_SIZE) -> ad.AnnData:
    """:func:`pbsmall` and :func:`hemato` in one AnnData: the 750 cells ``atacformer demo`` pretrains on.

    Parameters
    ----------
    bin_size
        Bin size in bp (default 5,000).

    Returns
    -------
    AnnData
        750 cells × hg19 bins (PBSmall first), ``obs['dataset']`` (``pbsmall`` / ``hemato``, for
        ``--batch-key dataset``), ``obs['cell_type']`` and ``obs['barcode']``; cells are named
        ``<name>-<dataset>``. ``uns`` keeps ``genome``, ``bin_size``, ``chroms`` and ``chrom_sizes``.
    """
    parts = {"pbsmall": pbsmall(bin_size=bin_size), "hemato": hemato(bin_size=bin_size)}
    cells = ad.concat(parts, label="dataset", merge="same", uns_merge="first", index_unique="-")
    cells.uns.pop("ingest", None)  # the first part's ingest report would describe only PBSmall
    return cells


def pbmc_multiome(*, bin_size: int | None = DEFAULT_BIN_SIZE) -> tuple[ad.AnnData, ad.AnnData]:
    """A 10x Multiome PBMC subset (via SIMBA): paired ATAC and RNA of the same 100 cells, GRCh38.

    Parameters
    ----------
    bin_size
        Bin size in bp for the ATAC part (default 5,000: the 200 peaks re-binned to hg38 bins, by
        midpoint). ``None`` returns the ATAC peak matrix as shipped (``var`` columns ``chr``, ``start``,
        ``end``, float32 counts).

    Returns
    -------
    atac, rna : AnnData
        Both 100 cells in the same order (``obs_names`` end in ``_atac`` / ``_rna``; ``obs['celltype']``
        holds numeric cluster ids ``'1'``–``'19'``, not named types). ``rna`` is 100 cells × 200 genes
        (float32 counts, ``var['gene_ids']`` Ensembl ids).
    """
    atac_path, rna = _shipped(MULTIOME_ATAC_FILE), ad.read_h5ad(_shipped(MULTIOME_RNA_FILE))
    if bin_size is None:
        return ad.read_h5ad(atac_path), rna
    from .io import read_region_matrix

    return read_region_matrix(atac_path, genome="hg38", bin_size=bin_size), rna


def snareseq(*, bin_size: int | None = 5000):
    """SNARE-seq adult mouse cortex: paired ATAC and RNA of the same 6,968 nuclei (8 libraries in
    ``obs['batch']``, 23 fine / 15 coarse cell types in ``obs['cell_type']`` / ``obs['cell_type_coarse']``),
    mm10. See ``atacformer/data/ATTRIBUTION.md``.

    Parameters
    ----------
    bin_size
        ATAC re-binned to genome-wide bins of this size (None: the shipped 25,734 regions).

    Returns
    -------
    ``(atac, rna)``: cells × bins (or regions) and cells × genes (raw counts), same ``obs_names``.
    """
    from ._snareseq import snareseq as load

    return load(bin_size=bin_size)
