"""On-disk formats of DNA embedding tables: rows (n, dim), bin names (n,) and a metadata dict.

=====================  ===============================================================================
``table/`` directory   ``embeddings.npy`` + ``bins.txt`` (one bin name per line) + ``meta.json``
                       (what ``atacformer dna-embed`` writes; memory-mapped on load)
``X.npy``              the rows, with sidecars ``X.bins.txt`` and ``X.meta.json`` (memory-mapped)
``X.npz``              arrays ``embeddings``, ``bins`` and ``meta`` (a JSON string)
``X.h5`` / ``X.hdf5``  datasets ``embeddings`` and ``bins``; JSON metadata in attribute ``meta``
``X.parquet``          columns ``bin`` (string) and ``embedding`` (fixed-size list of float16/32);
                       JSON metadata in the schema metadata key ``atacformer.dna``
=====================  ===============================================================================

Every writer goes through a temporary file in the destination folder and ``os.replace``; in the
``.npy`` layouts the metadata file is written last, so a table without it is incomplete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, write_text

PARQUET_KEY = b"atacformer.dna"


def sidecars(path: Path) -> tuple[Path, Path, Path]:
    """(rows .npy, bin names .txt, metadata .json) of a table directory or a ``.npy`` file."""
    if path.suffix == ".npy":
        stem = path.with_suffix("")
        return path, Path(f"{stem}.bins.txt"), Path(f"{stem}.meta.json")
    return path / "embeddings.npy", path / "bins.txt", path / "meta.json"


def write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


# ------------------------------------------------------------------------------------------ readers
def _read_npy(path: Path):
    rows_path, names_path, meta_path = sidecars(path)
    for p in (rows_path, names_path, meta_path):
        if not p.exists():
            raise FileNotFoundError(f"{p}: missing part of the DNA embedding table {path} (incomplete build?)")
    rows = np.load(rows_path, mmap_mode="r")
    names = np.array(names_path.read_text().splitlines(), dtype=object)
    return rows, names, json.loads(meta_path.read_text())


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as z:
        missing = {"embeddings", "bins", "meta"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: .npz table lacks arrays {sorted(missing)}")
        return z["embeddings"], z["bins"].astype(object), json.loads(str(z["meta"]))


def _read_h5(path: Path):
    import h5py

    with h5py.File(path, "r") as f:
        if "embeddings" not in f or "bins" not in f or "meta" not in f.attrs:
            raise ValueError(f"{path}: HDF5 table needs datasets 'embeddings', 'bins' and attribute 'meta'")
        rows = f["embeddings"][()]
        names = np.array(f["bins"].asstr()[()], dtype=object)
        return rows, names, json.loads(f.attrs["meta"])


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(PARQUET_KEY)
    if meta is None or "bin" not in table.column_names or "embedding" not in table.column_names:
        raise ValueError(f"{path}: Parquet table needs columns 'bin', 'embedding' and {PARQUET_KEY!r} metadata")
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size if hasattr(emb.type, "list_size") else len(emb[0])
    rows = emb.flatten().to_numpy(zero_copy_only=False).reshape(len(table), dim)
    return rows, np.array(table.column("bin").to_pylist(), dtype=object), json.loads(meta)


# ------------------------------------------------------------------------------------------ writers
def _write_npy(path: Path, rows, names, meta) -> None:
    rows_path, names_path, meta_path = sidecars(path)
    if path.suffix != ".npy":
        path.mkdir(parents=True, exist_ok=True)
    write_npy(rows_path, rows)
    write_text(names_path, "\n".join(map(str, names)) + "\n")
    write_text(meta_path, json.dumps(meta, indent=2))


def _write_npz(path: Path, rows, names, meta) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, embeddings=rows, bins=np.asarray(names, dtype=str), meta=np.array(json.dumps(meta)))


def _write_h5(path: Path, rows, names, meta) -> None:
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("embeddings", data=rows, chunks=(min(len(rows), 4096) or 1, rows.shape[1]))
            f.create_dataset("bins", data=np.asarray(names, dtype=object), dtype=h5py.string_dtype())
            f.attrs["meta"] = json.dumps(meta)


def _write_parquet(path: Path, rows, names, meta) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(rows).ravel())
    emb = pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])
    table = pa.table({"bin": pa.array([str(n) for n in names], pa.string()), "embedding": emb})
    table = table.replace_schema_metadata({PARQUET_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


_FORMATS: dict[str, tuple[Callable, Callable]] = {
    ".npy": (_read_npy, _write_npy),
    ".npz": (_read_npz, _write_npz),
    ".h5": (_read_h5, _write_h5),
    ".hdf5": (_read_h5, _write_h5),
    ".parquet": (_read_parquet, _write_parquet),
    ".pq": (_read_parquet, _write_parquet),
}


def _format(path: Path) -> tuple[Callable, Callable]:
    if path.suffix in _FORMATS:
        return _FORMATS[path.suffix]
    if path.is_dir() or not path.suffix:
        return _FORMATS[".npy"]  # table directory
    raise ValueError(f"{path}: unknown DNA table format {path.suffix!r}; use a directory, "
                     f"{', '.join(_FORMATS)}")


def read_table(path: str | Path):
    """(rows, bin names, metadata) of a table; rows are memory-mapped for the ``.npy`` layouts."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: DNA embedding table not found")
    return _format(path)[0](path)


def write_table(path: str | Path, rows: np.ndarray, names, meta: dict) -> Path:
    """Write a table in the format given by ``path`` (a directory when it has no suffix)."""
    path = Path(path)
    _format(path)[1](path, rows, names, meta)
    return path
