"""Predict the PASCAL VOC 2012 test images for the evaluation server (rule export_voc_test).

Writes ``<out-dir>/Segmentation/comp6_test_cls/<id>.png`` (palette PNGs at each image's size,
the segmenter's argmax with the ``segmenter.inference`` scales and flip) and packs them as
``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` into ``--out-tar``
(``wsss_core.segmenter.export``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging

from tqdm import tqdm

from wsss_core.cli import add_options, config_json, script_main
from wsss_core.io import atomic_directory
from wsss_core.runs import settings_text
from wsss_core.runtime import select_device, set_threads
from wsss_core.segmenter.export import check_voc_classes, pack_results, voc_test_ids
from wsss_core.segmenter.model import load_segmenter
from wsss_core.segmenter.predict import predict_dataset

log = logging.getLogger("export_voc_test")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="segmenter.pt from train_segmenter")
    add_options(parser, "data-root", "device")
    parser.add_argument(
        "--config-json", required=True,
        help="config section segmenter.inference {scales, flip} as a JSON object",
    )  # fmt: skip
    parser.add_argument("--out-dir", required=True, help="folder VOC2012 of the predictions")
    parser.add_argument("--out-tar", required=True, help="the tar for the evaluation server")
    args = parser.parse_args(argv)

    cfg = config_json(args.config_json, "segmenter.inference", ("scales", "flip"))
    scales, flip = [float(s) for s in cfg["scales"]], bool(cfg["flip"])
    set_threads(args.threads)
    device = select_device(args.device)
    model, info = load_segmenter(args.model, device)
    check_voc_classes(info["class_names"], args.model)
    ids = voc_test_ids(args.data_root)
    log.info("predicting %d test images on %s (%s)", len(ids), device, settings_text(scales, flip))
    with contextlib.ExitStack() as stack:
        out_dir = stack.enter_context(atomic_directory(args.out_dir))
        masks = out_dir / "Segmentation" / "comp6_test_cls"
        masks.mkdir(parents=True)
        bar = stack.enter_context(tqdm(total=len(ids), desc="export"))
        predict_dataset(
            model, args.data_root, ids, masks, info["mean"], info["std"],
            scales=scales, flip=flip, progress=bar.update,
        )  # fmt: skip
        count = pack_results(masks, ids, args.out_tar)
    log.info("wrote %d predictions to %s and %s", count, args.out_dir, args.out_tar)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
