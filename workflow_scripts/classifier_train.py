"""Fine-tune the ViT multi-label classifier on image-level labels (rule finetune_classifier).

Reads the images of ``--data-root`` for the ids of the train and val splits and their
label tables; writes ``<out-dir>/model.pt``, ``metrics.json``, ``val_metrics.csv``,
``history.csv`` and, after every epoch, ``checkpoints/last.pt`` (a rerun after a kill
resumes from it when the config, seed, label tables and images are unchanged).
``--config-json`` is the ``classifier`` config section (see wsss_core.classifier and
wsss_core.classifier.train); ``num_classes`` comes from the label tables.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wsss_core.classifier.model import ClassifierConfigError, build_classifier, normalization
from wsss_core.classifier.train import config_summary, input_files, train
from wsss_core.cli import add_options, parse_json_object, script_main
from wsss_core.config import fill_defaults
from wsss_core.data.datasets import VOCClassification
from wsss_core.data.labels import read_label_table
from wsss_core.data.transforms import eval_transform, train_transform
from wsss_core.runtime import seed_everything, select_device, set_threads

log = logging.getLogger("finetune_classifier")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_options(parser, "data-root", "seed", "device")
    parser.add_argument("--train-labels", required=True, help="label table labels/<split>.csv")
    parser.add_argument("--val-labels", required=True, help="label table of the val split")
    parser.add_argument("--train-split", default=None, help="default: the train table's stem")
    parser.add_argument("--val-split", default=None, help="default: the val table's stem")
    parser.add_argument("--config-json", required=True, help="classifier config section as JSON")
    parser.add_argument("--out-dir", required=True)
    return parser.parse_args(argv)


def _class_names(train_labels: str, val_labels: str) -> list[str]:
    _, names, _ = read_label_table(train_labels)
    _, val_names, _ = read_label_table(val_labels)
    if names != val_names:
        raise ValueError(
            f"label tables {train_labels} and {val_labels} name different classes "
            f"({names} vs {val_names}); re-run make_labels for both splits"
        )
    return names


def _scale_range(config: dict) -> tuple[float, float]:
    value = config["scale_range"]
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ClassifierConfigError(f"classifier.scale_range must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


def run(args: argparse.Namespace) -> dict:
    config = parse_json_object(
        args.config_json, "--config-json", "classifier", ClassifierConfigError
    )
    # the workflow passes the whole section, defaults filled in; by hand, missing keys take them
    config = fill_defaults(config, "classifier")
    names = _class_names(args.train_labels, args.val_labels)
    if config.get("num_classes") not in (None, len(names)):
        raise ClassifierConfigError(
            f"classifier.num_classes is {config['num_classes']} but the label tables have "
            f"{len(names)} classes; remove the key (it is taken from the tables)"
        )
    config["num_classes"] = len(names)
    set_threads(args.threads)
    device = select_device(args.device)

    seed_everything(args.seed)  # the initial weights are drawn from the config's seed
    model = build_classifier(config)
    mean, std = normalization(config)
    size = int(config["img_size"])
    jitter = float(config["jitter"])
    train_split = args.train_split or Path(args.train_labels).stem
    val_split = args.val_split or Path(args.val_labels).stem
    train_ds = VOCClassification(
        args.data_root,
        train_split,
        args.train_labels,
        train_transform(size, _scale_range(config), mean, std, jitter=jitter),
    )
    val_ds = VOCClassification(
        args.data_root, val_split, args.val_labels, eval_transform(size, mean, std)
    )
    log.info(
        "%s (%.2f M parameters), %d classes, %d train / %d val images, device %s",
        config["backbone"], sum(p.numel() for p in model.parameters()) / 1e6, len(names),
        len(train_ds), len(val_ds), device,
    )  # fmt: skip
    log.info("training config: %s", config_summary(config))
    inputs = input_files(
        args.data_root, train_ds.ids + val_ds.ids, [args.train_labels, args.val_labels]
    )
    return train(
        model, train_ds, val_ds, config, args.out_dir, device, log=log, seed=args.seed,
        class_names=names, inputs=inputs,
    )  # fmt: skip


@script_main
def main(argv: list[str] | None = None) -> int:
    metrics = run(parse_args(argv))
    log.info("val mAP %s, macro F1 %s", metrics["mAP"], metrics["macro_F1"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
