"""The HDF5 relevance-map store (wsss_core.cams.store)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from workflow_utils import load_script

from wsss_core.cams.store import CamReader, CamRecord, merge_stores, upsample_normalise, write_store


def records() -> list[CamRecord]:
    rng = np.random.default_rng(0)
    return [
        CamRecord("2007_000032", rng.normal(size=(2, 4, 5)).astype(np.float32), [0, 14], (30, 40)),
        # tiny and huge magnitudes survive float16 storage (per-class scale factors)
        CamRecord(
            "a",
            np.stack([rng.random((3, 3)) * 1e-7, rng.random((3, 3)) * 1e6]).astype(np.float32),
            [3, 1],
            (9, 9),
        ),
        CamRecord("b", np.zeros((0, 3, 3), np.float32), [], (12, 6)),
        CamRecord("c", np.zeros((1, 2, 2), np.float32), [5], (4, 4)),
    ]


def test_round_trip(tmp_path):
    path = tmp_path / "cams" / "m.h5"
    write_store(path, records(), "transformer_attribution")
    with CamReader(path) as reader:
        assert reader.method == "transformer_attribution"
        assert reader.ids() == ["2007_000032", "a", "b", "c"]
        for rec in records():
            got = reader.raw(rec.image_id)
            assert got.image_id == rec.image_id
            assert got.classes == rec.classes
            assert got.image_size == rec.image_size
            assert got.maps.dtype == np.float32 and got.maps.shape == rec.maps.shape
            for g, e in zip(got.maps, rec.maps, strict=True):
                np.testing.assert_allclose(g, e, rtol=0, atol=2.0**-11 * np.abs(e).max())
    with h5py.File(path) as h5:
        dset = h5["2007_000032/maps"]
        assert dset.dtype == np.float16
        assert dset.chunks == (1, 4, 5) and dset.compression == "gzip"
        assert h5["b/maps"].shape == (0, 3, 3)
        assert h5.attrs["method"] == "transformer_attribution"


def test_upsampled_values_on_a_hand_made_map(tmp_path):
    """2x2 -> 4x4 bilinear with half-pixel centres: 1-D weights (1,0), (.75,.25), (.25,.75),
    (0,1); negatives clipped, then divided by the maximum (4)."""
    grid = np.array([[0.0, 2.0], [4.0, -2.0]], dtype=np.float32)
    maps = np.stack([grid, -np.abs(grid)])  # the second map is <= 0 everywhere
    write_store(tmp_path / "s.h5", [CamRecord("x", maps, [2, 7], (4, 4))], "rollout")
    with CamReader(tmp_path / "s.h5") as reader:
        up, classes = reader.upsampled("x")
    w = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    expected = np.clip(w @ grid @ w.T, 0, None) / 4.0
    assert classes == [2, 7]
    assert up.dtype == np.float32 and up.shape == (2, 4, 4)
    np.testing.assert_allclose(up[0], expected, rtol=1e-6, atol=1e-7)
    assert up[0].max() == pytest.approx(1.0)
    assert not up[1].any()


def test_upsample_of_empty_and_same_size():
    assert upsample_normalise(np.zeros((0, 2, 2)), (5, 7)).shape == (0, 5, 7)
    maps = np.array([[[1.0, 3.0], [0.0, 2.0]]])
    np.testing.assert_allclose(upsample_normalise(maps, (2, 2)), maps / 3.0, rtol=1e-7)


def test_failed_write_leaves_no_file(tmp_path):
    def failing():
        yield records()[0]
        raise RuntimeError("killed midway")

    target = tmp_path / "m.h5"
    with pytest.raises(RuntimeError, match="killed midway"):
        write_store(target, failing(), "rollout")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "record,match",
    [
        (CamRecord("x", np.full((1, 2, 2), np.nan), [0], (2, 2)), "NaN"),
        (CamRecord("x", np.zeros((2, 2, 2)), [0], (2, 2)), "2 maps but 1 classes"),
        (CamRecord("x/y", np.zeros((1, 2, 2)), [0], (2, 2)), "HDF5 group"),
        (CamRecord("x", np.zeros((1, 2, 2)), [0], (0, 2)), "image size"),
        (CamRecord("x", np.zeros((2, 2)), [0], (2, 2)), r"\[K, h, w\]"),
    ],
)
def test_bad_records_raise(tmp_path, record, match):
    with pytest.raises(ValueError, match=match):
        write_store(tmp_path / "m.h5", [record], "rollout")
    assert not (tmp_path / "m.h5").exists()


def test_duplicate_id_in_one_store_raises(tmp_path):
    rec = records()[0]
    with pytest.raises(ValueError, match="written twice"):
        write_store(tmp_path / "m.h5", [rec, rec], "rollout")


def test_merge_shards(tmp_path):
    recs = records()
    write_store(tmp_path / "s0.h5", recs[0::2], "full_lrp")
    write_store(tmp_path / "s1.h5", recs[1::2], "full_lrp")
    write_store(tmp_path / "s2.h5", [], "full_lrp")  # a shard with no image
    shards = [tmp_path / "s0.h5", tmp_path / "s1.h5", tmp_path / "s2.h5"]
    n = merge_stores(shards, tmp_path / "m.h5")
    assert n == 4
    with CamReader(tmp_path / "m.h5") as reader:
        assert reader.method == "full_lrp"
        assert reader.ids() == sorted(r.image_id for r in recs)
        for rec in recs:
            got = reader.raw(rec.image_id)
            assert got.classes == rec.classes and got.image_size == rec.image_size
            if rec.maps.size:
                scale = np.abs(rec.maps).max(axis=(1, 2), keepdims=True)
                assert np.all(np.abs(got.maps - rec.maps) <= 2.0**-11 * scale)


def test_merge_duplicates_and_mixed_methods_raise(tmp_path):
    recs = records()
    write_store(tmp_path / "s0.h5", recs[:2], "rollout")
    write_store(tmp_path / "s1.h5", recs[1:], "rollout")
    write_store(tmp_path / "s2.h5", recs[2:], "full_lrp")
    with pytest.raises(ValueError, match="'a' is in both"):
        merge_stores([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "m.h5")
    with pytest.raises(ValueError, match="holds method 'full_lrp'"):
        merge_stores([tmp_path / "s0.h5", tmp_path / "s2.h5"], tmp_path / "m.h5")
    with pytest.raises(FileNotFoundError, match="s9.h5"):
        merge_stores([tmp_path / "s0.h5", tmp_path / "s9.h5"], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_reader_errors(tmp_path):
    write_store(tmp_path / "m.h5", records()[:1], "rollout")
    with CamReader(tmp_path / "m.h5") as reader:
        with pytest.raises(KeyError, match="m.h5"):
            reader.raw("missing")
        with pytest.raises(KeyError, match="missing"):
            reader.upsampled("missing")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.create_group("x")
    with pytest.raises(ValueError, match="not a cam store"):
        CamReader(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        CamReader(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="cannot open"):
        CamReader(tmp_path / "junk.h5")


# --------------------------------------------------------------------------------------
# extract_cams / gather_cams CLIs on a tiny classifier and three images


def _tiny_run(tmp_path):
    import pandas as pd
    import torch
    from PIL import Image

    from wsss_core.classifier.model import build_classifier, save_classifier

    torch.manual_seed(0)
    cfg = {"backbone": "hybrid_tiny", "num_classes": 2, "img_size": 32, "pretrained": False}
    save_classifier(tmp_path / "model.pt", build_classifier(cfg), cfg, ["cat", "dog"])
    root = tmp_path / "data"
    (root / "JPEGImages").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"im0": (40, 50), "im1": (24, 36), "im2": (30, 30)}
    for image_id, (h, w) in sizes.items():
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg")
    table = pd.DataFrame({"image_id": list(sizes), "cat": [1, 0, 1], "dog": [1, 1, 0]})
    table.to_csv(tmp_path / "train.csv", index=False)
    return root, sizes


def test_extract_and_gather_cli(tmp_path):
    extract_cams, gather_cams = load_script("cams_extract"), load_script("cams_gather")
    root, sizes = _tiny_run(tmp_path)
    shards = []
    for shard in range(2):
        out = tmp_path / f"shard{shard}.h5"
        argv = [
            "--classifier",
            str(tmp_path / "model.pt"),
            "--data-root",
            str(root),
            "--labels",
            str(tmp_path / "train.csv"),
            "--method",
            "transformer_attribution",
            "--shard",
            str(shard),
            "--num-shards",
            "2",
            "--config-json",
            '{"scales": [1.0, 0.5], "flip": true, "start_layer": 1}',
            "--device",
            "cpu",
            "--threads",
            "1",
            "--batch-size",
            "2",
            "--out",
            str(out),
        ]
        assert extract_cams.main(argv) == 0
        shards.append(str(out))
    with CamReader(shards[0]) as reader:
        assert reader.ids() == ["im0", "im2"]  # shard 0 takes ids[0::2]
    assert gather_cams.main(["--shards", *shards, "--out", str(tmp_path / "m.h5")]) == 0
    with CamReader(tmp_path / "m.h5") as reader:
        assert reader.method == "transformer_attribution"
        assert reader.ids() == ["im0", "im1", "im2"]
        expected_classes = {"im0": [0, 1], "im1": [1], "im2": [0]}
        for image_id, (h, w) in sizes.items():
            record = reader.raw(image_id)
            assert record.classes == expected_classes[image_id]
            assert record.image_size == (h, w)
            assert record.maps.shape == (len(record.classes), 4, 4)  # 32 px / stride 8
            maps, classes = reader.upsampled(image_id)
            assert maps.shape == (len(classes), h, w)
            assert maps.min() >= 0 and maps.max() <= 1


def test_extract_cli_rejects_mismatched_classes(tmp_path, capsys):
    import pandas as pd

    extract_cams = load_script("cams_extract")
    root, sizes = _tiny_run(tmp_path)
    pd.DataFrame({"image_id": list(sizes), "cow": [1, 1, 1], "dog": [0, 0, 0]}).to_csv(
        tmp_path / "other.csv", index=False
    )
    argv = [
        "--classifier",
        str(tmp_path / "model.pt"),
        "--data-root",
        str(root),
        "--labels",
        str(tmp_path / "other.csv"),
        "--method",
        "rollout",
        "--config-json",
        '{"scales": [1.0], "flip": false, "start_layer": 1}',
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "s.h5"),
    ]
    assert extract_cams.main(argv) == 2
    assert "differ from those of" in capsys.readouterr().err
    assert not (tmp_path / "s.h5").exists()
