"""Train the AffinityNet on CRF seed masks (rule train_affinity).

Reads the images of ``--data-root`` for the ids of ``--split`` and their seed masks
``<seeds>/<id>.png`` (0 background, c + 1 class c, 255 unsure); with the classifier backbone
the ViT comes from ``--classifier``. After every epoch the net is scored against the
ground-truth affinities of ``affinity.net.val_images`` images of ``--val-split`` (spread
evenly over it; 0: no validation). Writes ``<out-dir>/affinity.pt``, ``history.csv`` and,
after every epoch, ``checkpoints/last.pt`` (a rerun after a kill resumes from it when the
config, seed, classifier, seed masks and images are unchanged).
``--config-json`` is the ``affinity.net`` config section (see wsss_core.affinity.net and
wsss_core.affinity.train).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from wsss_core.affinity.net import CLASSIFIER, AffinityConfigError, build_affinity_net
from wsss_core.affinity.train import effective_crop_size, input_files, split_config, train
from wsss_core.cli import add_options, parse_json_object, script_main
from wsss_core.config import fill_defaults
from wsss_core.data.datasets import VOCSegmentation
from wsss_core.data.layout import read_split, validation_ids
from wsss_core.data.transforms import eval_transform, train_transform
from wsss_core.runtime import seed_everything, select_device, set_threads

log = logging.getLogger("train_affinity")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classifier", required=True, help="classifier model.pt")
    parser.add_argument("--seeds", required=True, help="folder of <id>.png seed masks")
    add_options(parser, "data-root", "seed", "device")
    parser.add_argument("--split", required=True, help="split whose images are trained on")
    parser.add_argument("--val-split", default=None, help="split of the validation images")
    parser.add_argument("--config-json", required=True, help="affinity.net config as JSON")
    parser.add_argument("--out-dir", required=True)
    return parser.parse_args(argv)


def _check_seeds(seeds: Path, ids: list[str]) -> None:
    if not seeds.is_dir():
        raise FileNotFoundError(f"seed folder {seeds} does not exist; run rule crf_seeds")
    missing = [i for i in ids if not (seeds / f"{i}.png").is_file()]
    if missing:
        raise FileNotFoundError(
            f"seed folder {seeds} lacks {len(missing)} of {len(ids)} masks (first: "
            f"{missing[0]}.png); re-run rules crf_seeds and gather_seeds"
        )


def run(args: argparse.Namespace) -> list[dict]:
    config = parse_json_object(
        args.config_json, "--config-json", "affinity.net", AffinityConfigError
    )
    # the workflow passes the whole section, defaults filled in; by hand, missing keys take them
    config = fill_defaults(config, "affinity.net")
    net_cfg, tc = split_config(config)
    set_threads(args.threads)
    device = select_device(args.device)
    _check_seeds(Path(args.seeds), read_split(args.data_root, args.split))

    classifier = classifier_info = None
    if net_cfg.backbone == CLASSIFIER:
        from wsss_core.classifier.model import load_classifier

        classifier, classifier_info = load_classifier(args.classifier, "cpu")
    seed_everything(args.seed)  # the head's initial weights are drawn from the config's seed
    net, info = build_affinity_net(net_cfg, classifier, classifier_info)
    crop = effective_crop_size(tc, info)
    dataset = VOCSegmentation(
        args.data_root,
        args.split,
        mask_dir=args.seeds,
        transform=train_transform(crop, tc.scale_range, info["mean"], info["std"], tc.jitter),
    )
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    log.info(
        "AffinityNet on %s (%s), %.2f M trainable parameters; %d images of split '%s', "
        "crop %d, grid stride %d, radius %d; device %s",
        net_cfg.backbone, "frozen" if net_cfg.freeze_backbone else "fine-tuned",
        trainable / 1e6, len(dataset), args.split, crop, net_cfg.output_stride, tc.radius,
        device,
    )  # fmt: skip
    log.info("config: %s", json.dumps(config, sort_keys=True))
    val_ds = None
    val_ids = validation_ids(args.data_root, args.val_split, tc.val_images)
    if val_ids:
        val_ds = VOCSegmentation(
            args.data_root, args.val_split, ids=val_ids,
            transform=eval_transform(info["input_size"], info["mean"], info["std"]),
        )  # fmt: skip
        log.info("validating on %d images of split '%s'", len(val_ds), args.val_split)
    classifier_file = args.classifier if classifier is not None else None
    inputs = input_files(dataset, classifier_file, val_ds)
    return train(net, info, dataset, config, args.out_dir, device, seed=args.seed, inputs=inputs,
                 val_ds=val_ds)  # fmt: skip


@script_main
def main(argv: list[str] | None = None) -> int:
    history = run(parse_args(argv))
    log.info("final training loss %.4f", history[-1]["train_loss"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
