"""Relevance maps of one shard of the training images (rule extract_cams).

Every image of the shard (ids[shard::num_shards] of the label table) is resized to the
classifier's square input size (scale 1.0; other scales relative to it, see
``wsss_core.cams.multiscale``), normalised like the classifier's inputs, and explained for the
classes its label-table row marks present. The maps (raw relevance on the token grid of
scale 1.0, or on its pixel grid for full LRP) go into an HDF5 store with the original
image size, written atomically.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from wsss_core.cams.images import batches, classifier_inputs, input_size
from wsss_core.cams.lrp import VARIANTS
from wsss_core.cams.methods import METHODS
from wsss_core.cams.multiscale import check_scales, explain_multiscale
from wsss_core.cams.store import CamRecord, write_store
from wsss_core.classifier.model import load_classifier
from wsss_core.cli import add_options, config_json, script_main
from wsss_core.data.labels import read_label_table
from wsss_core.data.layout import load_image
from wsss_core.runs import settings_text
from wsss_core.runtime import select_device, set_threads
from wsss_core.shards import shard_ids

log = logging.getLogger("extract_cams")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", required=True, help="trained classifier model.pt")
    add_options(parser, "data-root", "shards", "device")
    parser.add_argument("--labels", required=True, help="label table labels/<split>.csv")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument(
        "--config-json", required=True,
        help="config keys cams.{scales, flip, start_layer} as a JSON object",
    )  # fmt: skip
    parser.add_argument(
        "--lrp-variant",
        choices=VARIANTS,
        default="chefer",
        help="LRP rules: chefer (layers_ours, default) or original (layers_lrp)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--out", required=True, help="shard store .h5")
    args = parser.parse_args(argv)
    cfg = config_json(args.config_json, "cams", ("scales", "flip", "start_layer"))
    args.scales = [float(s) for s in cfg["scales"]]  # as argparse gave them
    args.flip, args.start_layer = bool(cfg["flip"]), int(cfg["start_layer"])
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        check_scales(args.scales)
    except ValueError as err:
        parser.error(f"cams.scales: {err}")
    return args


def class_lists(labels: np.ndarray) -> list[list[int]]:
    """Present classes (label 1) of every row of a label table."""
    return [[int(c) for c in np.flatnonzero(row > 0.5)] for row in labels]


@script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    device = select_device(args.device)
    model, info = load_classifier(args.classifier, device)
    ids, names, labels = read_label_table(args.labels)
    if list(names) != list(info["class_names"]):
        raise ValueError(
            f"the classes of {args.labels} ({names}) differ from those of {args.classifier} "
            f"({info['class_names']}); retrain the classifier on this label table"
        )
    present = dict(zip(ids, class_lists(labels), strict=True))
    mine = shard_ids(ids, args.shard, args.num_shards)
    size = input_size(info, args.classifier)
    log.info(  # the run's record of its cams settings (read by wsss_core.runs)
        "%s: %d of %d images (shard %d/%d), %d px, %s, LRP %s, device %s",
        args.method,
        len(mine),
        len(ids),
        args.shard,
        args.num_shards,
        size,
        settings_text(args.scales, args.flip, args.start_layer),
        args.lrp_variant,
        device,
    )

    def records() -> Iterator[CamRecord]:
        progress = tqdm(total=len(mine), desc=f"{args.method} shard {args.shard}", unit="img")
        for chunk in batches(mine, args.batch_size):
            raw = [load_image(args.data_root, image_id) for image_id in chunk]
            x = classifier_inputs(raw, size, info["mean"], info["std"], device)
            classes = [present[image_id] for image_id in chunk]
            maps = explain_multiscale(
                model,
                x,
                classes,
                args.method,
                args.scales,
                args.flip,
                args.start_layer,
                variant=args.lrp_variant,
            )
            for image_id, img, cls, m in zip(chunk, raw, classes, maps, strict=True):
                yield CamRecord(image_id, m.float().cpu().numpy(), cls, img.shape[:2])
            progress.update(len(chunk))
        progress.close()

    start = time.perf_counter()
    write_store(args.out, records(), args.method)
    seconds = time.perf_counter() - start
    log.info("wrote %s: %d images in %.1f s", args.out, len(mine), seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
