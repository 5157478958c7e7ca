"""Baseline embeddings on the same cells × bins matrix as the model: TF-IDF + LSI and SnapATAC2 spectral.

AnnData wrappers of :func:`atacformer.pp.lsi_embedding` and :func:`atacformer.pp.spectral_embedding`
(where the algorithms are described).
"""

from __future__ import annotations

from anndata import AnnData

from .._docs import doc_params
from ..pp import lsi_embedding, spectral_embedding


@doc_params()
def lsi(
    adata: AnnData, *, n_comps: int = 30, depth_cor: float = 0.75, seed: int = 0, key_added: str = "X_lsi",
    copy: bool = False,
) -> AnnData | None:
    """TF-IDF + truncated SVD (Signac/ArchR LSI) of the counts in ``adata.X``.

    Parameters
    ----------
    {doc_adata}
    {doc_n_comps}
    depth_cor
        The first component is dropped when its |Pearson r| with log sequencing depth exceeds this.
    {doc_seed}
    key_added
        ``obsm`` and ``uns`` key of the result.
    {doc_copy}

    Returns
    -------
    {doc_returns_copy}

    ``adata.obsm[key_added]`` : float32 (n_cells, n_comps)
        Standardised LSI components.
    ``adata.uns[key_added]`` : dict
        ``depth_cor`` of each SVD component, ``dropped_first``, ``n_features`` (bins open in some cell).
    """
    adata = adata.copy() if copy else adata
    adata.obsm[key_added], adata.uns[key_added] = lsi_embedding(adata.X, n_comps=n_comps, depth_cor=depth_cor,
                                                                seed=seed)
    return adata if copy else None


@doc_params()
def spectral(
    adata: AnnData, *, n_comps: int = 30, seed: int = 0, use_snapatac2: bool = True, key_added: str = "X_spectral",
    copy: bool = False,
) -> AnnData | None:
    """SnapATAC2 spectral embedding of the counts in ``adata.X`` (``snapatac2.tl.spectral`` when it is
    installed, else the built-in re-implementation of the same algorithm).

    Parameters
    ----------
    {doc_adata}
    {doc_n_comps}
    {doc_seed}
    use_snapatac2
        Use ``snapatac2`` when it imports; ``False`` always runs the built-in version.
    key_added
        ``obsm`` and ``uns`` key of the result.
    {doc_copy}

    Returns
    -------
    {doc_returns_copy}

    ``adata.obsm[key_added]`` : float32 (n_cells, ≤ n_comps)
        Eigenvectors scaled by sqrt(eigenvalue).
    ``adata.uns[key_added]`` : dict
        ``implementation`` (which code ran) and ``eigenvalues``.
    """
    adata = adata.copy() if copy else adata
    adata.obsm[key_added], adata.uns[key_added] = spectral_embedding(adata.X, n_comps=n_comps, seed=seed,
                                                                     use_snapatac2=use_snapatac2)
    return adata if copy else None
