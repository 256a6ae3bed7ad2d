"""py3langid's language identifier, loaded for a few languages in a fraction of the memory its
own loader takes (the thread-watcher's peak RSS, issue 18: 216 MB with it, the target < 150).

py3langid's loader (`py3langid.modelio.load_model`) keeps the weights of all 97 languages
(28 MB of float16) and the byte n-gram automaton's transition table (39 MB of uint32) in the
process, and while loading holds the table twice. The model is the same here, read from the
same packaged file and classified by the same `LanguageIdentifier`, so it answers as before:
the file is unpacked to an unlinked temporary file as py3langid does itself, only the chosen
languages' weights are copied out (what `LanguageIdentifier.set_languages` keeps), and the
transition table is used where it lies in that file, through `mmap`. Its pages are clean file
pages: the kernel reads in the ones a text's walk touches and can drop them again, so they
never need to fit in the process's own memory.
"""

from __future__ import annotations

import lzma
import mmap
import os
import shutil
import tempfile
import zipfile
from array import array
from typing import BinaryIO

import numpy as np
from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

_LOCAL_HEADER = 30  # bytes of a zip member's local header before its name and extra field
_ROWS_AT_ONCE = 8192  # weights rows read per chunk: the 97-language table is never whole here


def identifier(languages: tuple[str, ...]) -> LanguageIdentifier:
    """py3langid's packaged model, classifying among `languages` only."""
    with tempfile.TemporaryFile(suffix=".npz") as npz:
        with lzma.open(MODEL_DIR / MODEL_FILE) as packed:
            shutil.copyfileobj(packed, npz, length=1 << 20)
        npz.flush()
        where = _arrays(npz)
        npz.seek(0)
        with np.load(npz, allow_pickle=False) as small:
            classes = small["classes"].tolist()
            chosen = [i for i, language in enumerate(classes) if language in languages]
            weights = _columns(npz, *where["ptc"], chosen)
            return LanguageIdentifier(
                weights, small["pc"][chosen], [classes[i] for i in chosen],
                _mapped(npz, *where["nextmove"]), array("i", small["out_feat"].astype(np.int32).tobytes()),
                tk_row=array("I", small["nextmove_row"].astype(np.uint32).tobytes()))


def _arrays(npz: BinaryIO) -> dict[str, tuple[int, np.dtype, tuple[int, ...]]]:
    """Where each array's data starts in the npz (np.savez stores members uncompressed), its
    type and shape."""
    found = {}
    for member in zipfile.ZipFile(npz).infolist():
        if member.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{MODEL_FILE}: {member.filename} is compressed in the npz")
        npz.seek(member.header_offset)
        header = npz.read(_LOCAL_HEADER)
        npz.seek(member.header_offset + _LOCAL_HEADER + int.from_bytes(header[26:28], "little")
                 + int.from_bytes(header[28:30], "little"))
        version = np.lib.format.read_magic(npz)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(npz)
        if fortran_order:
            raise ValueError(f"{MODEL_FILE}: {member.filename} is in Fortran order")
        found[member.filename.removesuffix(".npy")] = (npz.tell(), dtype, shape)
    return found


def _columns(npz: BinaryIO, offset: int, dtype: np.dtype, shape: tuple[int, ...],
             chosen: list[int]) -> np.ndarray:
    """The `chosen` columns of a 2-D array, read a chunk of rows at a time."""
    rows, width = shape
    npz.seek(offset)
    parts = []
    for start in range(0, rows, _ROWS_AT_ONCE):
        count = min(_ROWS_AT_ONCE, rows - start)
        chunk = np.frombuffer(npz.read(count * width * dtype.itemsize), dtype=dtype)
        parts.append(chunk.reshape(count, width)[:, chosen])
    return np.concatenate(parts)


def _mapped(npz: BinaryIO, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> memoryview:
    """A 1-D array of unsigned integers as it lies in the file, indexed like py3langid's own
    `array` (Python ints out). The mapping outlives the file object; the file, unlinked, goes
    with the process."""
    if dtype.kind != "u" or dtype.byteorder == ">":
        raise ValueError(f"{MODEL_FILE}: unexpected transition table type {dtype}")
    size = int(np.prod(shape)) * dtype.itemsize
    os.fdatasync(npz.fileno())
    os.posix_fadvise(npz.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    mapped = mmap.mmap(npz.fileno(), 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_RANDOM)
    return memoryview(mapped)[offset:offset + size].cast({2: "H", 4: "I"}[dtype.itemsize])
