"""Stage real, bundled data into a dataset cache root: scikit-learn's handwritten digits.

The 1,797 8x8 digit images ship inside scikit-learn (no download). They are written in the MNIST
raw IDX layout under their own name, `digits/raw/`, with a fixed 80/20 train/test split, so a
loader written for MNIST's files reads them unchanged. They are never labelled MNIST.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

IDX_UBYTE = 0x08
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _write_idx(path: Path, data: bytes, dims: tuple[int, ...]) -> None:
    header = struct.pack(">BBBB", 0, 0, IDX_UBYTE, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + data)
    os.replace(tmp, path)


def stage_digits(root: Path) -> list[Path]:
    try:
        import numpy as np
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "staging digits needs scikit-learn and numpy: pip install 'labls[examples]'"
        ) from exc
    bunch = load_digits()
    images = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)  # 0..16 → 0..255
    labels = bunch.target.astype(np.uint8)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = round(len(labels) * TEST_FRACTION)
    splits = {"t10k": order[:n_test], "train": order[n_test:]}
    folder = root / "digits" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for prefix, idx in splits.items():
        img_path = folder / f"{prefix}-images-idx3-ubyte"
        lbl_path = folder / f"{prefix}-labels-idx1-ubyte"
        _write_idx(img_path, images[idx].tobytes(), (len(idx), 8, 8))
        _write_idx(lbl_path, labels[idx].tobytes(), (len(idx),))
        written += [img_path, lbl_path]
    return written


def read_idx(path: Path) -> tuple[tuple[int, ...], bytes]:
    """Parse an IDX file: (dims, raw bytes). The tests read the staged files back with it."""
    raw = path.read_bytes()
    zero, zero2, dtype, ndim = struct.unpack(">BBBB", raw[:4])
    if zero or zero2 or dtype != IDX_UBYTE:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return dims, raw[4 + 4 * ndim :]
