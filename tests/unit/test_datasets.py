from __future__ import annotations

import os
from pathlib import Path

from labls.sandbox import datasets
from labls.sandbox.config import DatasetDecl
from labls.sandbox.staging import read_idx, stage_digits
from tests.helpers import make_cache


def test_registry_has_the_six_and_digits() -> None:
    names = {s.name for s in datasets.builtin_specs()}
    assert {"MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN", "STL10", "digits"} <= names


def test_missing_root_is_reported(tmp_path: Path) -> None:
    scan = datasets.scan(str(tmp_path / "nope"))
    assert not scan.root_exists and "does not exist" in (scan.root_error or "")
    assert not scan.available


def test_root_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert "not a directory" in (datasets.scan(str(tmp_path / "f")).root_error or "")


def test_empty_files_do_not_count_and_user_datasets_scan(tmp_path: Path) -> None:
    make_cache(tmp_path, ["CIFAR100"])
    (tmp_path / "cifar-100-python" / "meta").write_bytes(b"")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.npy").write_bytes(b"1234")
    scan = datasets.scan(str(tmp_path), {"mine": DatasetDecl("mine", ["a.npy"])})
    cifar = scan.find("cifar100")
    assert cifar is not None and not cifar.present and cifar.missing == ["meta"]
    mine = scan.find("mine")
    assert mine is not None and mine.present and mine.bytes == 4


def test_the_index_picks_the_owner() -> None:
    index = datasets.DatasetIndex("/c", datasets.all_specs())
    assert index.owner("/c/MNIST/raw/t10k-images-idx3-ubyte") == "MNIST"
    assert index.owner("/c/FashionMNIST/raw/x") == "FashionMNIST"
    assert index.owner("/c/other/x") is None


def test_the_index_answers_as_a_search_of_every_dataset_would() -> None:
    """Kept per folder, and still right for nested datasets, a dataset that is one file, a
    name that only starts like a dataset's folder, and paths that are not normal."""
    from labls.sandbox.datasets import DatasetSpec

    specs = [DatasetSpec("outer", "data", ()), DatasetSpec("inner", "data/inner", ()),
             DatasetSpec("single", "data/one.bin", ()), DatasetSpec("MNIST", "MNIST/raw", ())]

    def searched(path: str) -> str | None:  # the plain search: longest folder first
        p = os.path.normpath(path)
        for spec in sorted(specs, key=lambda s: -len(s.path)):
            base = os.path.join("/c", spec.path)
            if p == base or p.startswith(base + os.sep):
                return spec.name
        return None

    paths = ["/c/data/x", "/c/data/inner/y", "/c/data/inner/deep/z", "/c/data/one.bin",
             "/c/data/one.binx", "/c/data/innerx/y", "/c/data", "/c/data/inner", "/c/MNIST/raw/t",
             "/c/MNIST/rawish/t", "/c/MNIST/t", "/c//data/./inner/../x", "/c/other/x", "/elsewhere"]
    index = datasets.DatasetIndex("/c", specs)
    for _ in range(2):  # the second time from what the first kept
        assert [index.owner(p) for p in paths] == [searched(p) for p in paths]
    assert index.owner("/c/data/inner/q") == "inner" and index.owner("/c/data/one.bin") == "single"


def test_stage_digits_writes_idx_under_its_own_name(tmp_path: Path) -> None:
    stage_digits(tmp_path)
    status = datasets.scan(str(tmp_path)).find("digits")
    assert status is not None and status.present
    assert not (tmp_path / "MNIST").exists()
    dims, data = read_idx(tmp_path / "digits/raw/train-images-idx3-ubyte")
    tdims, labels = read_idx(tmp_path / "digits/raw/t10k-labels-idx1-ubyte")
    assert dims[1:] == (8, 8) and dims[0] + tdims[0] == 1797 and len(data) == dims[0] * 64
    assert set(labels) == set(range(10)) and max(data) > 200
