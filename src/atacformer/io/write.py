"""Atomic h5ad writing: a temporary file in the destination folder, then ``os.replace``.

:func:`write_csr_h5ad` streams a cells × bins CSR matrix to disk block by block, so an ingest never holds
the whole count matrix in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._atomic import atomic_path, check_free_space

_SLACK = 16 << 20  # bytes of free space kept beyond the estimate


def estimate_h5ad_bytes(n_obs: int, n_vars: int, nnz: int, *, index_bytes: int = 4) -> int:
    """Upper-bound size of an uncompressed cells × bins h5ad: X entries, indptr, obs and var tables."""
    return int(nnz * (4 + index_bytes) + n_obs * (index_bytes + 400) + n_vars * 80 + _SLACK)


@contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """h5py/anndata write failures (disk full, quota, I/O error) → an ``OSError`` naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        raise OSError(getattr(err, "errno", None) or 5,
                      f"{path}: writing failed ({err}); no output was written, an existing one is untouched"
                      ) from None


def write_h5ad(adata: ad.AnnData, path: str | Path) -> Path:
    """Write ``adata`` to ``path`` atomically (no half-written file is ever left behind)."""
    path = Path(path)
    nnz = adata.X.nnz if sp.issparse(adata.X) else int(np.prod(adata.shape))
    check_free_space(path, estimate_h5ad_bytes(adata.n_obs, adata.n_vars, nnz, index_bytes=8))
    with _write_errors(path), atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return path


def read_h5ad(path: str | Path, *, backed: str | None = None) -> ad.AnnData:
    """``anndata.read_h5ad`` with a ``ValueError`` naming the file when it is missing, truncated, not HDF5
    or not an AnnData."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"h5ad file not found: {path}")
    try:
        return ad.read_h5ad(path, backed=backed)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as err:
        why = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise ValueError(f"{path}: cannot read this h5ad file (truncated, corrupt or not an AnnData: {why})"
                         ) from None


def write_csr_h5ad(path: str | Path, *, obs: pd.DataFrame, var: pd.DataFrame, uns: dict,
                   blocks: Iterable[sp.csr_matrix], max_nnz: int | None = None, dtype=np.int32) -> Path:
    """Write an h5ad whose ``X`` is the row-wise concatenation of CSR ``blocks`` (rows = obs), atomically.

    obs, var and uns are written element by element (``anndata.io.write_elem``), without building an AnnData
    (whose constructor re-checks the uniqueness of every bin name). ``max_nnz`` (an upper bound of the number
    of stored entries) lets indices be int32 when it is < 2**31."""
    n_obs, n_vars = len(obs), len(var)
    index_dtype = np.int32 if max_nnz is not None and max_nnz < 2**31 and n_vars < 2**31 else np.int64
    path = Path(path)
    if max_nnz is not None:  # h5py can crash (not raise) when the disk fills up: check first
        size = estimate_h5ad_bytes(n_obs, n_vars, max_nnz, index_bytes=np.dtype(index_dtype).itemsize)
        check_free_space(path, size)
    with _write_errors(path), atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        for key, elem in (("obs", obs), ("var", var), ("uns", uns)):
            ad.io.write_elem(f, key, elem)
        for key in ("obsm", "varm", "obsp", "varp", "layers"):
            ad.io.write_elem(f, key, {})
        _write_csr_blocks(f, blocks, (n_obs, n_vars), dtype, index_dtype)
    return path


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
    try:
        with h5py.File(path, "r") as f:
            x = f["X"]
            return tuple(int(n) for n in (x.attrs["shape"] if isinstance(x, h5py.Group) else x.shape))
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: cannot read this h5ad file ({err})") from None
