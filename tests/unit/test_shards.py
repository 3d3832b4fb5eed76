"""Shard partition and mask-folder gathering."""

import pytest

from wsss_core.shards import gather_mask_dirs, shard_ids


def test_shards_partition_ids():
    ids = [f"im{i}" for i in range(7)]
    parts = [shard_ids(ids, i, 3) for i in range(3)]
    assert parts == [["im0", "im3", "im6"], ["im1", "im4"], ["im2", "im5"]]
    assert sorted(sum(parts, [])) == sorted(ids)
    with pytest.raises(ValueError, match="out of range"):
        shard_ids(ids, 3, 3)


def test_gather_merges_and_refuses_duplicates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.png").write_bytes(b"1")
    (b / "y.png").write_bytes(b"2")
    out = tmp_path / "out"
    assert gather_mask_dirs([a, b], out) == 2
    assert (out / "x.png").read_bytes() == b"1" and (out / "y.png").read_bytes() == b"2"
    (b / "x.png").write_bytes(b"3")
    out2 = tmp_path / "out2"
    with pytest.raises(ValueError, match="x.png"):
        gather_mask_dirs([a, b], out2)
    assert not out2.exists()
