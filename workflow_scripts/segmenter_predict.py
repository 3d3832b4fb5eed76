"""Predict label masks with the trained segmenter (rule predict_segmenter).

For every id of ``--split`` writes ``<out-dir>/<id>.png`` (argmax of the softmax averaged
over ``--scales`` and, with ``--flip``, horizontal flips) and, with ``--crf-out-dir``, the
argmax after a dense CRF with the ``--crf-json`` parameters as ``<crf-out-dir>/<id>.png``.
Each folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging

from tqdm import tqdm

from wsss_core.cli import add_options, config_json, script_main
from wsss_core.data.layout import read_split
from wsss_core.io import atomic_directory
from wsss_core.runs import settings_text
from wsss_core.runtime import select_device, set_threads
from wsss_core.seeds.crf import parse_crf_json
from wsss_core.segmenter.model import load_segmenter
from wsss_core.segmenter.predict import predict_dataset

log = logging.getLogger("predict_segmenter")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="segmenter.pt from train_segmenter")
    add_options(parser, "data-root", "device")
    parser.add_argument("--split", required=True, help="config key data.eval_split")
    parser.add_argument(
        "--config-json", required=True,
        help="config section segmenter.inference {scales, flip, crf} as a JSON object",
    )  # fmt: skip
    parser.add_argument("--crf-out-dir", default=None, help="folder for the CRF-refined masks")
    parser.add_argument("--out-dir", required=True, help="folder for the predicted masks")
    args = parser.parse_args(argv)

    cfg = config_json(args.config_json, "segmenter.inference", ("scales", "flip"))
    args.scales, args.flip = [float(s) for s in cfg["scales"]], bool(cfg["flip"])
    crf_params = None
    if args.crf_out_dir is not None:
        crf_json = json.dumps(cfg.get("crf", {}))
        crf_params = parse_crf_json(crf_json, "segmenter.inference.crf", option="--config-json")

    set_threads(args.threads)
    device = select_device(args.device)
    model, info = load_segmenter(args.model, device)
    ids = read_split(args.data_root, args.split)
    log.info(  # the run's record of its inference settings (read by wsss_core.runs)
        "predicting %d images of %s on %s (%s, CRF %s)",
        len(ids),
        args.split,
        device,
        settings_text(args.scales, args.flip),
        crf_params is not None,
    )
    with contextlib.ExitStack() as stack:
        out_dir = stack.enter_context(atomic_directory(args.out_dir))
        crf_dir = None
        if args.crf_out_dir is not None:
            crf_dir = stack.enter_context(atomic_directory(args.crf_out_dir))
        bar = stack.enter_context(tqdm(total=len(ids), desc="predict"))
        predict_dataset(
            model,
            args.data_root,
            ids,
            out_dir,
            info["mean"],
            info["std"],
            scales=args.scales,
            flip=args.flip,
            crf_params=crf_params,
            crf_out_dir=crf_dir,
            progress=bar.update,
        )
    log.info("wrote %s%s", args.out_dir, f" and {args.crf_out_dir}" if crf_dir else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
