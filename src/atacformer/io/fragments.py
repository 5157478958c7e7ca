"""Streaming reader for 10x-style fragment files: ``chrom, start, end, barcode[, count]``.

Files may be plain text, gzip or bgzip (multi-member gzip). Leading ``#`` lines are headers. A pipeline of two
threads reads the file: one decompresses it with ISA-L (``isal.igzip``) and cuts it into blocks of whole lines
(8 MB by default, ~180k fragments), the other parses each block with Arrow's CSV reader (single-threaded per
block). Both release the GIL, so on two cores decompression, parsing and the caller's counting overlap.
Memory stays bounded by a few blocks whatever the file size.

On any parse problem the file is re-scanned line by line (slowly, only on the error path) to report the
exact line number and text of the first bad line.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from isal import igzip

DEFAULT_CHUNK_BYTES = 8 << 20  # decompressed bytes per chunk (~180k fragments)
_DEPTH = 2  # blocks queued between the pipeline's threads
_COLUMNS = ["chrom", "start", "end", "barcode", "count"]
_DICT = pa.dictionary(pa.int32(), pa.string())
_TYPES = {"chrom": _DICT, "start": pa.int64(), "end": pa.int64(), "barcode": _DICT, "count": pa.int32()}


@dataclass
class FragmentChunk:
    """A block of consecutive fragments, as numpy arrays (n = number of fragments in the chunk).

    ``chrom_codes``/``barcode_codes`` index the chunk-local dictionaries ``chrom_names``/``barcode_names``.
    ``first_line`` is the 1-based line number of the chunk's first record (headers counted).
    """

    chrom_codes: np.ndarray  # (n,) int32
    chrom_names: list[str]
    start: np.ndarray  # (n,) int32 (int64 only if a position is >= 2**31), 0-based
    end: np.ndarray  # (n,) same dtype as start, exclusive
    barcode_codes: np.ndarray  # (n,) int32
    barcode_names: list[str]
    count: np.ndarray  # (n,) int32, reads supporting the fragment (PCR duplicates + 1)
    first_line: int

    def __len__(self) -> int:
        return int(self.start.shape[0])


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_binary(path: str | Path):
    """Open a plain or (b)gzip-compressed file for binary reading."""
    return igzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def _decompressed(fileobj):
    """A binary stream over an open file: decompressing if it starts with the gzip magic bytes."""
    magic = fileobj.read(2)
    fileobj.seek(0)
    return igzip.IGzipFile(fileobj=fileobj, mode="rb") if magic == b"\x1f\x8b" else contextlib.nullcontext(fileobj)


def _header(path: Path) -> tuple[int, int]:
    """(number of leading ``#``/blank lines, number of columns of the first record; 0 if no record)."""
    n_header = 0
    with open_binary(path) as fh:
        try:
            for raw in fh:
                if raw.startswith(b"#") or not raw.strip():
                    n_header += 1
                    continue
                return n_header, len(raw.rstrip(b"\r\n").split(b"\t"))
        except (EOFError, OSError) as err:
            raise _gzip_error(path, err) from None
    return n_header, 0


def _gzip_error(path: Path, err: Exception) -> ValueError:
    return ValueError(f"{path}: truncated or corrupt compressed file ({err}); re-download or re-run bgzip")


def iter_fragments(
    path: str | Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> Iterator[FragmentChunk]:
    """Stream a fragments file as :class:`FragmentChunk` blocks of about ``chunk_size`` decompressed bytes.

    A 4-column file (no count) gets count 1. Unsorted files are fine. Raises ``ValueError`` naming the file,
    line number and text of the first malformed line, or naming the file if the gzip stream is truncated.
    ``progress``, if given, is called with the number of file (compressed) bytes consumed since its last call.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fragments file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file (a pipe can be read only once; atacformer.io.ingest and "
                         "read_fragments copy piped input to a temporary file first)")
    n_header, n_cols = _header(path)
    if n_cols == 0:
        return
    if n_cols not in (4, 5):
        _raise_first_bad_line(path, n_cols if n_cols in (4, 5) else 5)
    line = n_header + 1
    try:
        # ring of depth + 3 buffers: at most depth queued, one being parsed, one being filled
        blocks = _threaded(_line_blocks(path, int(chunk_size), n_header, n_buffers=_DEPTH + 3), depth=_DEPTH)
        for chunk, consumed, n_lines in _threaded(_parsed(blocks, int(chunk_size), n_cols), depth=_DEPTH):
            if chunk is not None:
                chunk.first_line = line
                if not _valid(chunk):
                    _raise_first_bad_line(path, n_cols)
            line += n_lines
            if progress is not None:
                progress(consumed)
            if chunk is not None:
                yield chunk
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        _raise_first_bad_line(path, n_cols, err)
    except (EOFError, OSError, igzip.BadGzipFile) as err:
        raise _gzip_error(path, err) from None


def _parsed(blocks: Iterator[tuple[memoryview, int, int]], size: int, n_cols: int
            ) -> Iterator[tuple[FragmentChunk | None, int, int]]:
    """(chunk or None if the block has no record, file bytes consumed, lines in the block) per block of about
    ``size`` bytes."""
    read_opts = pacsv.ReadOptions(block_size=size + (size >> 2), column_names=_COLUMNS[:n_cols], use_threads=False)
    parse_opts = pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False)
    # UTF-8 is checked once per dictionary entry (in _to_chunk), not once per row
    convert_opts = pacsv.ConvertOptions(column_types={k: _TYPES[k] for k in _COLUMNS[:n_cols]}, check_utf8=False)
    pool = pa.system_memory_pool()  # returns freed blocks to the OS: flat RSS
    for block, consumed, n_lines in blocks:
        table = pacsv.read_csv(pa.py_buffer(block), read_options=read_opts, parse_options=parse_opts,
                               convert_options=convert_opts, memory_pool=pool)
        chunk = _to_chunk(table, pool) if table.num_rows else None
        yield chunk, consumed, n_lines


def _line_blocks(path: Path, size: int, skip_lines: int, n_buffers: int) -> Iterator[tuple[memoryview, int, int]]:
    """Decompressed blocks of about ``size`` bytes ending at a line end, after ``skip_lines`` header lines;
    each with the number of file bytes consumed since the previous block and its number of lines.

    Blocks are views into a ring of ``n_buffers`` buffers filled in place, so no block is allocated (and
    page-faulted in) anew: a block stays valid until ``n_buffers - 1`` more have been produced. The only copy
    is the previous block's partial last line, moved to the front of the next buffer."""
    ring = [bytearray(size + 4096) for _ in range(n_buffers)]
    with open(path, "rb") as fileobj, _decompressed(fileobj) as raw:
        rest, done = b"", 0
        for i in itertools.count():
            if len(ring[i % n_buffers]) < len(rest) + size:  # a line longer than the spare room
                ring[i % n_buffers] = bytearray(len(rest) + size)
            buf = ring[i % n_buffers]
            view = memoryview(buf)
            view[: len(rest)] = rest
            end = len(rest) + raw.readinto(view[len(rest) : len(rest) + size])
            if end == len(rest):
                if rest.strip():
                    yield memoryview(rest + b"\n"), fileobj.tell() - done, 1
                return
            first = 0
            while skip_lines and (nl := buf.find(b"\n", first, end)) >= 0:
                first, skip_lines = nl + 1, skip_lines - 1
            cut = buf.rfind(b"\n", first, end) + 1
            rest = bytes(view[max(cut, first) : end])
            if cut > first:
                lines = np.count_nonzero(np.frombuffer(buf, np.uint8, cut - first, first) == 10)
                yield view[first:cut], fileobj.tell() - done, int(lines)
                done = fileobj.tell()


def _threaded(items: Iterator, depth: int = 2) -> Iterator:
    """Run a generator in a background thread, ``depth`` items ahead (ISA-L and Arrow release the GIL).

    Exceptions are re-raised in the consumer; closing the consumer stops the thread and closes ``items``."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as err:  # re-raised in the consumer
            put(err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _to_chunk(table: pa.Table, pool: pa.MemoryPool) -> FragmentChunk:
    if any(c.num_chunks != 1 for c in table.columns):  # a block bigger than Arrow's block size
        table = table.unify_dictionaries(pool).combine_chunks(pool)
    chrom, start, end, barcode = (table.column(i).chunk(0) for i in range(4))
    count = table.column(4).chunk(0).to_numpy() if table.num_columns == 5 else np.ones(len(start), np.int32)
    start, end = start.to_numpy(), end.to_numpy()
    if len(end) and end.max() < 2**31:  # int32 halves the memory traffic of every later step
        start, end = start.astype(np.int32), end.astype(np.int32)
    return FragmentChunk(
        chrom_codes=chrom.indices.to_numpy(),
        chrom_names=_names(chrom.dictionary),
        start=start,
        end=end,
        barcode_codes=barcode.indices.to_numpy(),
        barcode_names=_names(barcode.dictionary),
        count=count,
        first_line=0,
    )


def _names(dictionary: pa.Array) -> list[str]:
    """Dictionary entries with surrounding white space removed (``"AAAC-1 "`` is barcode ``AAAC-1``)."""
    try:
        names = dictionary.to_pylist()
    except UnicodeDecodeError as err:  # reported with its line number by the error path
        raise pa.ArrowInvalid(f"not UTF-8 text: {err}") from None
    return [n.strip() for n in names]


def _bad_name(name: str) -> bool:
    return not name or any(c < " " for c in name)


def _valid(chunk: FragmentChunk) -> bool:
    if any(_bad_name(n) for n in chunk.barcode_names) or any(_bad_name(n) for n in chunk.chrom_names):
        return False
    return bool(chunk.start.min() >= 0 and (chunk.end > chunk.start).all() and chunk.count.min() >= 1)


def _line_problem(fields: list[bytes], n_cols: int) -> str | None:
    """Why a split record is not a valid fragment line, or None if it is."""
    if len(fields) != n_cols:
        return f"expected {n_cols} tab-separated columns (chrom, start, end, barcode[, count]), got {len(fields)}"
    try:
        start, end = int(fields[1]), int(fields[2])
        count = int(fields[4]) if n_cols == 5 else 1
    except ValueError:
        return "start, end and count must be integers"
    if start < 0 or end <= start:
        return "need 0 <= start < end"
    if end >= 2**62:
        return f"position {end} is too large"
    if not 1 <= count < 2**31:
        return "count must be >= 1" if count < 1 else f"count {count} is too large (at most {2**31 - 1})"
    try:
        chrom, barcode = fields[0].decode("utf-8").strip(), fields[3].decode("utf-8").strip()
    except UnicodeDecodeError:
        return "chromosome and barcode must be UTF-8 text"
    if not chrom or not barcode:
        return "empty chromosome or barcode"
    if _bad_name(chrom) or _bad_name(barcode):
        return "control character (e.g. a NUL byte) in the chromosome or barcode"
    return None


def _raise_first_bad_line(path: Path, n_cols: int, err: Exception | None = None) -> None:
    """Scan the file line by line and raise a ValueError for the first malformed record."""
    with open_binary(path) as fh:
        try:
            lines = io.BufferedReader(fh) if not hasattr(fh, "readline") else fh
            seen_record = False
            for lineno, raw in enumerate(lines, 1):
                text = raw.rstrip(b"\r\n")
                if not text.strip() or (not seen_record and text.startswith(b"#")):
                    continue
                seen_record = True
                problem = _line_problem(text.split(b"\t"), n_cols)
                if problem:
                    shown = text[:200].decode("utf-8", "replace")
                    raise ValueError(f"{path}, line {lineno}: malformed fragment line ({problem}): {shown!r}")
        except (EOFError, OSError) as gz_err:
            raise _gzip_error(path, gz_err) from None
    raise ValueError(f"{path}: could not parse fragments ({err})")
