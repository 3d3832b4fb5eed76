"""The ``wsss`` command (installed with the package): masks and relevance maps for new images.

    wsss predict RUN_OR_MODEL IMAGES... --out DIR [--relevance] [--device auto] [--batch-size N]
    wsss explain CLASSIFIER_OR_RUN IMAGES... --out DIR [--method M] [--classes present|all|a,b]

This module parses the command line and calls ``wsss_core.segmenter.images`` (predict) and
``wsss_core.cams.images`` (explain), which say what they write. A bad input (a missing run
folder, no images, an unreadable image, a wrong option value) ends with one line
``wsss: error: ...`` naming it and exit code 2. ``python -m wsss_core.commands`` is the same.
"""

from __future__ import annotations

import argparse
import logging

from wsss_core.cams.images import ALL, PRESENT, explain_images, plan_explain
from wsss_core.cams.methods import METHODS
from wsss_core.cli import progress_bar, script_main
from wsss_core.segmenter.images import plan_predict, predict_images

log = logging.getLogger("wsss")


def _scales(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"want positive numbers separated by commas, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a positive integer, got {text!r}")
    return value


def _common(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "images", nargs="+", metavar="IMAGES",
        help="image files (any format PIL reads, any size) or folders of them",
    )  # fmt: skip
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument(
        "--scales", type=_scales, default=None, metavar="S[,S...]",
        help=f"{verb} at these scales, e.g. 1.0,0.5,1.5 (default: the run's, else the config's)",
    )  # fmt: skip
    parser.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=None,
        help=f"{verb} the mirrored images too (default: the run's, else the config's)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="auto",
        help="auto (CUDA when present, default), cpu, cuda or cuda:N",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=_positive, default=4, metavar="N", help="images per batch (4)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsss",
        description="Masks and relevance maps for new images from a finished wsss run.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="label masks (palette PNGs), overlays and relevance maps with a run's segmenter",
        description="Per image <stem>.png (label mask, VOC palette), <stem>_overlay.png and "
        "with --relevance <stem>_<class>.png (the classifier's relevance map of each class "
        "in the mask, a heat map over the image).",
    )
    predict.add_argument(
        "model", metavar="RUN_OR_MODEL",
        help="a finished run folder (results/<run>) or a segmenter .pt file",
    )  # fmt: skip
    _common(predict, "predict")
    predict.add_argument(
        "--relevance", action="store_true",
        help="also write the relevance map (transformer attribution) of each predicted class",
    )  # fmt: skip
    predict.add_argument(
        "--classifier", default=None, metavar="FILE",
        help="classifier model.pt for --relevance (default: the run's classifier/model.pt)",
    )  # fmt: skip
    predict.add_argument(
        "--method", default=None,
        help="the run's segmenter segmenter/<method>/ (needed when it has several)",
    )  # fmt: skip
    predict.set_defaults(run=_predict)

    explain = commands.add_parser(
        "explain",
        help="relevance maps of a classifier as heat maps",
        description="Per image and class <stem>_<class>.png (relevance map as a heat map over "
        "the image) and with --npy <stem>_<class>.npy (float32 [H, W] in [0, 1]); "
        "scores.csv holds every image's class probabilities.",
    )
    explain.add_argument(
        "model", metavar="CLASSIFIER_OR_RUN",
        help="a classifier model.pt or a finished run folder (results/<run>)",
    )  # fmt: skip
    _common(explain, "explain")
    explain.add_argument(
        "--method", default="transformer_attribution", choices=METHODS,
        help="relevance method (default transformer_attribution)",
    )  # fmt: skip
    explain.add_argument(
        "--classes", default=PRESENT,
        help=f"{PRESENT} (probability >= 0.5, default), {ALL}, or class names a,b,...",
    )  # fmt: skip
    explain.add_argument(
        "--start-layer", type=int, default=None, metavar="L",
        help="first block of the rollout (default: the run's, else the config default)",
    )  # fmt: skip
    explain.add_argument("--npy", action="store_true", help="also write the maps as .npy")
    explain.set_defaults(run=_explain)
    return parser


def _predict(args: argparse.Namespace) -> int:
    job = plan_predict(
        args.model, args.images, args.out, method=args.method, classifier=args.classifier,
        relevance=args.relevance, scales=args.scales, flip=args.flip, device=args.device,
        batch_size=args.batch_size,
    )  # fmt: skip
    with progress_bar(len(job.images), "predict") as update:
        count = predict_images(job, update)
    log.info("wrote the masks and overlays of %d images to %s", count, job.out_dir)
    return 0


def _explain(args: argparse.Namespace) -> int:
    job = plan_explain(
        args.model, args.images, args.out, method=args.method, classes=args.classes,
        scales=args.scales, flip=args.flip, start_layer=args.start_layer, device=args.device,
        batch_size=args.batch_size, npy=args.npy,
    )  # fmt: skip
    with progress_bar(len(job.images), "explain") as update:
        count = explain_images(job, update)
    log.info("wrote %d relevance maps of %d images to %s", count, len(job.images), job.out_dir)
    return 0


@script_main(name="wsss")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
