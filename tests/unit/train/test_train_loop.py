"""The one training loop (wsss_core.train): which checkpoint resumes a run, what is set
aside, checkpoints readable with weights_only=True, content digests of the inputs."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wsss_core.train.checkpoint import (
    UnreadableCheckpoint,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from wsss_core.train.digest import dataset_files, digest_files
from wsss_core.train.loop import CHECKPOINT, SUPERSEDED, Fingerprint, train_epochs

ROOT = Path(__file__).resolve().parents[3]
EPOCHS = 3
SETTINGS = {"lr": 0.1, "net": {"width": 4}}


class Killed(Exception):
    pass


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "points.txt"
    path.parent.mkdir()
    np.savetxt(path, np.random.default_rng(0).normal(size=(8, 5)))
    return path


def _run(out_dir: Path, data_file: Path, settings: dict = SETTINGS, seed: int = 7,
         kill_after: int | None = None, epochs_run: list[int] | None = None):  # fmt: skip
    """Fit a linear map to the numbers in ``data_file`` by SGD with noise drawn from torch's,
    NumPy's and Python's global generators (a resume must restore all three)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=0.9)
    data = torch.from_numpy(np.loadtxt(data_file, dtype=np.float32))
    fingerprint = Fingerprint.of(settings, seed, {"points": [data_file]})

    def run_epoch(epoch: int) -> dict[str, float]:
        noise = 0.1 * torch.randn(len(data), 4) + np.random.normal() + random.random()
        loss = ((model(data[:, :4] + noise).squeeze(1) - data[:, 4]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"train_loss": loss.item()}

    def on_epoch_end(epoch: int, row: dict) -> None:
        if epochs_run is not None:
            epochs_run.append(epoch)
        if epoch == kill_after:
            raise Killed

    history = train_epochs(model, optimizer, fingerprint, EPOCHS, run_epoch, out_dir,
                           ["epoch", "train_loss"], on_epoch_end)  # fmt: skip
    return model, history


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def _messages(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if word in r.getMessage()]


def test_same_run_resumes_to_the_same_weights(tmp_path, data_file, caplog):
    whole, whole_history = _run(tmp_path / "whole", data_file)
    with pytest.raises(Killed):
        _run(tmp_path / "run", data_file, kill_after=1)
    epochs: list[int] = []
    caplog.set_level("INFO")
    resumed, history = _run(tmp_path / "run", data_file, epochs_run=epochs)
    assert epochs == [2, 3]
    assert len(_messages(caplog, "resuming")) == 1 and not _messages(caplog, "set aside")
    _assert_same_weights(whole, resumed)
    assert history == whole_history and [row["epoch"] for row in history] == [1, 2, 3]
    assert (tmp_path / "run" / "history.csv").read_bytes() == (
        tmp_path / "whole" / "history.csv"
    ).read_bytes()
    assert not (tmp_path / "run" / SUPERSEDED).exists()
    # the training moved the weights: the comparison is not vacuous
    torch.manual_seed(0)
    assert not torch.equal(nn.Linear(4, 1).weight, whole.weight)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("settings", "other settings (lr: 0.1 -> 0.05)"),
        ("nested settings", 'other settings (net: {"width": 4} -> {"width": 5})'),
        ("seed", "seed 7 instead of 8"),
        ("inputs", "other input files (content digest changed)"),
    ],
)
def test_other_settings_seed_or_inputs_set_the_checkpoint_aside(
    tmp_path, data_file, caplog, change, said
):
    run = tmp_path / "run"
    with pytest.raises(Killed):
        _run(run, data_file, kill_after=2)
    killed_checkpoint = (run / CHECKPOINT).read_bytes()
    settings, seed = SETTINGS, 7
    if change == "settings":
        settings = {**SETTINGS, "lr": 0.05}
    elif change == "nested settings":
        settings = {**SETTINGS, "net": {"width": 5}}
    elif change == "seed":
        seed = 8
    else:  # same file name and size, one number changed: only the content tells
        text = data_file.read_text()
        data_file.write_text(text.replace("e-01", "e-02", 1))
        assert len(data_file.read_text()) == len(text)
    epochs: list[int] = []
    caplog.set_level("INFO")
    rerun, _ = _run(run, data_file, settings, seed, epochs_run=epochs)

    assert epochs == [1, 2, 3]  # trained from scratch
    set_aside = _messages(caplog, "set aside")
    assert len(set_aside) == 1 and said in set_aside[0], set_aside
    assert "superseded.pt" in set_aside[0] and not _messages(caplog, "resuming")
    assert (run / SUPERSEDED).read_bytes() == killed_checkpoint
    fresh, _ = _run(tmp_path / "fresh", data_file, settings, seed)
    _assert_same_weights(fresh, rerun)
    assert (run / "history.csv").read_bytes() == (tmp_path / "fresh" / "history.csv").read_bytes()
    # the new checkpoint carries the new fingerprint: a third run resumes it (nothing to do)
    epochs.clear()
    _run(run, data_file, settings, seed, epochs_run=epochs)
    assert epochs == []


@pytest.mark.parametrize("kind", ["garbage", "pickled objects", "old format", "other model"])
def test_unusable_checkpoint_is_set_aside_not_an_error(tmp_path, data_file, caplog, kind):
    run = tmp_path / "run"
    (run / CHECKPOINT).parent.mkdir(parents=True)
    (run / SUPERSEDED).write_bytes(b"an older superseded checkpoint")
    if kind == "garbage":
        (run / CHECKPOINT).write_bytes(b"not a checkpoint")
    elif kind == "pickled objects":  # what the trainers wrote before: NumPy's state as a tuple
        torch.save({"rng": {"numpy": np.random.get_state()}}, run / CHECKPOINT)
    elif kind == "old format":
        _run(run, data_file)
        state = torch.load(run / CHECKPOINT, weights_only=True)
        state["fingerprint"] = {"config": SETTINGS, "seed": 7, "num_train": 8}
        torch.save(state, run / CHECKPOINT)
    else:
        _run(run, data_file)
        state = torch.load(run / CHECKPOINT, weights_only=True)
        state["model"] = nn.Linear(4, 2).state_dict()
        torch.save(state, run / CHECKPOINT)
    written = (run / CHECKPOINT).read_bytes()
    epochs: list[int] = []
    caplog.set_level("INFO")
    model, _ = _run(run, data_file, epochs_run=epochs)
    assert epochs == [1, 2, 3]
    assert len(_messages(caplog, "set aside")) == 1
    assert (run / SUPERSEDED).read_bytes() == written  # the older one was replaced
    fresh, _ = _run(tmp_path / "fresh", data_file)
    _assert_same_weights(fresh, model)


def test_checkpoint_holds_tensors_and_plain_values_only(tmp_path, data_file):
    with pytest.raises(Killed):
        _run(tmp_path, data_file, kill_after=1)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1 and state["history"][0]["epoch"] == 1
    assert state["fingerprint"] == {
        "settings": SETTINGS,
        "seed": 7,
        "inputs": digest_files({"points": [tmp_path / "data" / "points.txt"]}),
    }

    def leaves(value):
        if isinstance(value, dict):
            for key, item in value.items():
                assert isinstance(key, str | int)
                yield from leaves(item)
        elif isinstance(value, list | tuple):
            for item in value:
                yield from leaves(item)
        else:
            yield value

    for leaf in leaves(state):
        assert leaf is None or type(leaf) in (torch.Tensor, int, float, str, bool), type(leaf)


def test_random_generator_states_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # NumPy caches the second Gaussian: the cache must round-trip too
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_states()})

    def draws():
        return random.random(), random.gauss(0, 1), np.random.normal(), torch.rand(3).tolist()

    expected = draws()
    draws()
    restore_rng_states(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draws() == expected


def test_unreadable_checkpoint_names_the_file(tmp_path):
    assert load_checkpoint(tmp_path / "none.pt") is None
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(UnreadableCheckpoint, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_digest_follows_content_not_location(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    for name, text in (("x.png", "one"), ("y.png", "two")):
        (a / name).write_text(text)
    digest = digest_files({"masks": [a / "y.png", a / "x.png"]})
    assert digest == digest_files({"masks": [a / "x.png", a / "y.png"]})  # order given
    shutil.copytree(a, tmp_path / "b")
    assert digest == digest_files({"masks": [tmp_path / "b" / "x.png", tmp_path / "b" / "y.png"]})
    assert digest != digest_files({"images": [a / "x.png", a / "y.png"]})  # role
    (a / "y.png").write_text("twO")
    assert digest != digest_files({"masks": [a / "x.png", a / "y.png"]})  # one byte
    (a / "y.png").write_text("two")
    (a / "y.png").rename(a / "z.png")
    assert digest != digest_files({"masks": [a / "x.png", a / "z.png"]})  # an id


def test_dataset_files_lists_images_and_masks(tmp_path):
    files = dataset_files(tmp_path, ["b", "a"], masks=True, mask_dir=tmp_path / "seeds")
    assert files == {
        "images": [tmp_path / "JPEGImages" / "b.jpg", tmp_path / "JPEGImages" / "a.jpg"],
        "masks": [tmp_path / "seeds" / "b.png", tmp_path / "seeds" / "a.png"],
    }
    assert set(dataset_files(tmp_path, ["a"])) == {"images"}


def test_no_torch_load_unpickles_objects():
    flag = "weights_only=" + "False"
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("wsss_core", "workflow_scripts", "tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if flag in path.read_text()
    ]
    assert offenders == []
