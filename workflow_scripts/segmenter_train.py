"""Train the segmenter on pseudo masks (rule train_segmenter).

Reads ``<masks>/<id>.png`` for the ids of ``--split`` and the images of ``--data-root``;
writes ``<out-dir>/segmenter.pt``, ``<out-dir>/history.csv`` (with the scores on
``segmenter.net.val_images`` images of ``--val-split`` after every epoch) and, after every epoch,
``<out-dir>/checkpoints/last.pt`` (a rerun after a kill resumes from it when the config,
seed, masks, images and backbone file are unchanged). ``--classifier`` is the run's classifier,
the backbone of ``segmenter.net.backbone: classifier`` (other backbones ignore it).
``--config-json`` is the ``segmenter.net`` config section (see wsss_core.segmenter.train).
"""

from __future__ import annotations

import argparse
import logging

from wsss_core.cli import add_options, parse_json_object, script_main
from wsss_core.config import fill_defaults
from wsss_core.runtime import select_device, set_threads
from wsss_core.segmenter.train import train_segmenter

log = logging.getLogger("train_segmenter")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--masks", required=True, help="folder of pseudo masks <id>.png")
    add_options(parser, "data-root", "seed", "device")
    parser.add_argument("--split", required=True, help="config key data.train_split")
    parser.add_argument("--val-split", default=None, help="config key data.eval_split")
    parser.add_argument("--config-json", required=True, help="segmenter.net config as JSON")
    parser.add_argument("--classifier", default=None, help="the run's classifier model.pt")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    config = parse_json_object(args.config_json, "--config-json", "segmenter.net")
    # the workflow passes the whole section, defaults filled in; by hand, missing keys take them
    config = fill_defaults(config, "segmenter.net")
    set_threads(args.threads)
    device = select_device(args.device)
    log.info("training the segmenter on %s (%s split) on %s", args.masks, args.split, device)
    result = train_segmenter(
        args.data_root, args.split, args.masks, args.out_dir, config, seed=args.seed,
        device=device, val_split=args.val_split, classifier=args.classifier,
    )  # fmt: skip
    last = result.history.iloc[-1]
    log.info("wrote %s (final train_loss %.4f)", result.model_path, last["train_loss"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
