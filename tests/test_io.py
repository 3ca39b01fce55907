"""Descriptor files round-trip features and packed codes; bad files are named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cbir.codes import n_bytes, pack_bits, unpack_bits
from cbir.io import read_descriptors, write_descriptors, write_parquet
from conftest import REPO

SRC = REPO / "src"

INDEX = pd.DataFrame(
    {"image_id": ["a", "b", "c", "d"], "label": [1, 2, 3, 1], "train": [True, True, False, False], "database": [True, True, True, False], "query": [False, False, False, True]}
)


def test_features_round_trip(tmp_path):
    values = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    write_descriptors(tmp_path / "f.parquet", INDEX, values)
    back = read_descriptors(tmp_path / "f.parquet")
    np.testing.assert_array_equal(back.values, values)
    assert not back.is_binary and back.image_id.tolist() == ["a", "b", "c", "d"]
    assert back.subset("database").image_id.tolist() == ["a", "b", "c"]
    assert back.subset("query").label.tolist() == [1]


@pytest.mark.parametrize("n_bits", [1, 7, 8, 9, 12, 33, 64])
def test_codes_round_trip_including_zero_bytes(tmp_path, n_bits):
    bits = np.random.default_rng(n_bits).integers(0, 2, (4, n_bits))
    bits[0] = 0  # an all-zero code: trailing zero bytes must survive
    bits[1, -1] = 0
    codes = pack_bits(bits)
    write_descriptors(tmp_path / "c.parquet", INDEX, codes, n_bits=n_bits)
    back = read_descriptors(tmp_path / "c.parquet")
    assert back.n_bits == n_bits and back.values.shape == (4, n_bytes(n_bits))
    np.testing.assert_array_equal(unpack_bits(back.values, n_bits), bits)


def test_wrong_code_width_is_refused(tmp_path):
    with pytest.raises(ValueError, match="12-bit codes"):
        write_descriptors(tmp_path / "c.parquet", INDEX, np.zeros((4, 1), np.uint8), n_bits=12)


def test_missing_and_foreign_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_descriptors(tmp_path / "nope.parquet")
    write_parquet(pd.DataFrame({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="other.parquet is not a descriptor file"):
        read_descriptors(tmp_path / "other.parquet")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="garbage.parquet"):
        read_descriptors(tmp_path / "garbage.parquet")


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"x": [1]}), target)
    import pyarrow.parquet as pq

    def broken(table, where):
        open(where, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError):
        write_parquet(pd.DataFrame({"x": [2]}), target)
    assert pd.read_parquet(target)["x"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_a_writer_killed_mid_write_leaves_nothing_under_the_final_name(tmp_path):
    """SIGKILL, which no cleanup survives, while a large table is being written."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "big.bin"
    target.write_bytes(b"the previous version")
    writer = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(SRC)!r})\n"
        "from cbir.io import atomic_output\n"
        f"with atomic_output({str(target)!r}) as tmp, open(tmp, 'wb') as out:\n"
        "    for _ in range(1000):\n"
        "        out.write(b'x' * 100_000)\n"
        "        out.flush()\n"
        "        time.sleep(0.01)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", writer])
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in tmp_path.glob(".big.bin.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".big.bin.*.tmp")), "the writer never started"
    assert target.read_bytes() == b"the previous version"


def test_outputs_get_the_mode_of_any_new_file(tmp_path):
    import os
    import stat

    write_parquet(pd.DataFrame({"x": [1]}), tmp_path / "t.parquet")
    (tmp_path / "plain").write_text("x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "t.parquet") == mode(tmp_path / "plain")
