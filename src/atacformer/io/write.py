"""Atomic h5ad writing: a temporary file in the destination folder, then ``os.replace``.

:func:`write_csr_h5ad` streams a cells × bins CSR matrix to disk block by block, so an ingest never holds
the whole count matrix in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._atomic import atomic_path


def write_h5ad(adata: ad.AnnData, path: str | Path) -> Path:
    """Write ``adata`` to ``path`` atomically (no half-written file is ever left behind)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


def write_csr_h5ad(path: str | Path, *, obs: pd.DataFrame, var: pd.DataFrame, uns: dict,
                   blocks: Iterable[sp.csr_matrix], max_nnz: int | None = None, dtype=np.int32) -> Path:
    """Write an h5ad whose ``X`` is the row-wise concatenation of CSR ``blocks`` (rows = obs), atomically.

    obs, var and uns are written element by element (``anndata.io.write_elem``), without building an AnnData
    (whose constructor re-checks the uniqueness of every bin name). ``max_nnz`` (an upper bound of the number
    of stored entries) lets indices be int32 when it is < 2**31."""
    n_obs, n_vars = len(obs), len(var)
    index_dtype = np.int32 if max_nnz is not None and max_nnz < 2**31 and n_vars < 2**31 else np.int64
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        for key, elem in (("obs", obs), ("var", var), ("uns", uns)):
            ad.io.write_elem(f, key, elem)
        for key in ("obsm", "varm", "obsp", "varp", "layers"):
            ad.io.write_elem(f, key, {})
        _write_csr_blocks(f, blocks, (n_obs, n_vars), dtype, index_dtype)
    return Path(path)


def _write_csr_blocks(f: h5py.File, blocks: Iterable[sp.csr_matrix], shape: tuple[int, int], dtype, index_dtype
                      ) -> None:
    """Append CSR row blocks to ``f['X']`` (anndata's csr_matrix encoding), growing data/indices as they come."""
    g = f.create_group("X")
    g.attrs["encoding-type"] = "csr_matrix"
    g.attrs["encoding-version"] = "0.1.0"
    g.attrs["shape"] = np.array(shape, dtype=np.int64)
    data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 18,))
    indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=index_dtype, chunks=(1 << 18,))
    indptr = [np.zeros(1, dtype=index_dtype)]
    nnz = rows = 0
    for block in blocks:
        k = block.nnz
        data.resize((nnz + k,))
        indices.resize((nnz + k,))
        data[nnz:] = block.data.astype(dtype, copy=False)
        indices[nnz:] = block.indices.astype(index_dtype, copy=False)
        indptr.append((block.indptr[1:] + nnz).astype(index_dtype))
        nnz += k
        rows += block.shape[0]
    if rows != shape[0]:
        raise RuntimeError(f"internal error: wrote {rows} rows for {shape[0]} cells")
    g.create_dataset("indptr", data=np.concatenate(indptr))


def h5ad_shape(path: str | Path) -> tuple[int, int]:
    """(n_obs, n_vars) of an h5ad, read from its ``X`` alone (no obs/var names are loaded)."""
    with h5py.File(path, "r") as f:
        x = f["X"]
        return tuple(int(n) for n in (x.attrs["shape"] if isinstance(x, h5py.Group) else x.shape))
