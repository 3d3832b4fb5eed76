"""How far the random walk lifts the relevance maps, and how far ground-truth affinities would
(rule walk_ceiling; ``wsss_core.walk.ceiling``).

Walks every ``walk.ceiling_every``-th image of the split twice, with the trained AffinityNet's
features and with ground-truth affinities, and writes one table: mIoU and per-class IoU of the
relevance map (with the walk's background exponent), the walk, and the walk with ground-truth
affinities. A split without ground truth (which the ground-truth walk needs) gets the same
table with "no ground truth" in every score cell.
"""

from __future__ import annotations

import argparse
import logging

from wsss_core.affinity.net import load_affinity_net
from wsss_core.cli import add_options, config_json, script_main
from wsss_core.data.layout import read_class_names, read_split, split_has_masks
from wsss_core.io import to_markdown, write_table
from wsss_core.runtime import select_device, set_threads
from wsss_core.walk.ceiling import ceiling_table, no_ground_truth_table, walk_ceiling
from wsss_core.walk.walk import WalkParams

log = logging.getLogger("walk_ceiling")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser, "store", "data-root", "device")
    parser.add_argument("--affinity", required=True, help="AffinityNet affinity.pt")
    parser.add_argument("--split", required=True, help="split whose images are walked")
    parser.add_argument(
        "--config-json", required=True,
        help="config keys walk.{ceiling_every, alpha, beta, logt, radius, normalise} (JSON)",
    )  # fmt: skip
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-md", required=True)
    args = parser.parse_args(argv)
    keys = ("ceiling_every", *WalkParams.keys())
    cfg = config_json(args.config_json, "walk", keys)
    args.every = int(cfg["ceiling_every"])
    args.walk = WalkParams.from_config(cfg)  # a bad value: one line naming the key
    if args.every < 1:
        parser.error(f"walk.ceiling_every must be a positive integer, got {args.every}")
    return args


@script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    device = select_device(args.device)
    names = read_class_names(args.data_root)
    ids = read_split(args.data_root, args.split)[:: args.every]
    if not split_has_masks(args.data_root, args.split):
        write_table(no_ground_truth_table(names), args.out_csv, args.out_md)
        log.info("split %s has no ground truth: no walk ceiling", args.split)
        return 0
    net, info = load_affinity_net(args.affinity, device)
    log.info("%d images of %s, %s, on %s", len(ids), args.split, args.walk, device)
    cms = walk_ceiling(
        args.store, net, info, args.data_root, len(names) + 1, args.walk, ids, device, progress=True
    )
    table = ceiling_table(cms, names)
    write_table(table, args.out_csv, args.out_md)
    log.info("\n%s", to_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
