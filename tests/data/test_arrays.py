"""Tests of pyrovae/data/arrays.py: reading .npy and .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyrovae.data.load import load_dataset
from pyrovae.errors import DataError


@pytest.mark.parametrize("stream", ["no", "auto"])
@pytest.mark.parametrize("content", ["objects", "garbage"])
def test_a_file_that_is_no_array_of_numbers_is_named_so(tmp_path: Path, content, stream):
    # numpy's message advised loading it "unsafely" with allow_pickle.
    path = tmp_path / "x.npy"
    if content == "objects":
        np.save(path, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    else:
        path.write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="not an array of numbers: it holds Python objects") as info:
        load_dataset(path, stream=stream)
    assert "allow_pickle" not in str(info.value)


def test_another_error_is_not_blamed_on_python_objects(tmp_path: Path):
    # The reason matched "pickle" anywhere, the path in an OSError's text included.
    from pyrovae.data.arrays import array_file_reason

    missing = FileNotFoundError(2, "No such file or directory", str(tmp_path / "pickled.npy"))
    assert array_file_reason(missing).startswith("FileNotFoundError")
