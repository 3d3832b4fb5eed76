"""Pseudo masks by the PSA random walk over AffinityNet affinities (rule random_walk).

For each image of this shard (the store's ids, every n-th from the shard index): AffinityNet
features of the image (resized like the classifier's input), the relevance maps of its
classes at image size with the background (1 - max)^alpha added, pooled to the feature
grid, walked 2^logt steps with T = D^-1 A^beta, upsampled to the image, each channel back
at its pre-walk peak (walk.normalise), argmax over the background and the image's classes ->
``<out-dir>/<id>.png``. With ``--crf-out-dir`` (and walk.crf in ``--config-json``), the walked
scores (normalised per pixel) are also refined by a dense CRF -> ``<crf-out-dir>/<id>.png``.
Every mask is a palette PNG written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wsss_core.affinity.net import image_features, load_affinity_net
from wsss_core.cams.store import CamReader
from wsss_core.cli import add_options, config_json, script_main
from wsss_core.data.palette import save_mask
from wsss_core.runtime import select_device, set_threads
from wsss_core.seeds.crf import CRFParams, dense_crf, parse_crf_json
from wsss_core.shards import shard_ids
from wsss_core.walk.walk import WalkParams, scores_to_mask, walk_maps

log = logging.getLogger("random_walk")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_options(parser, "store", "data-root", "shards", "device")
    parser.add_argument("--affinity", required=True, help="trained AffinityNet affinity.pt")
    parser.add_argument(
        "--config-json", required=True,
        help="config keys walk.{alpha, beta, logt, radius, normalise, crf} as a JSON object",
    )  # fmt: skip
    parser.add_argument("--out-dir", required=True, help="folder for <id>.png walk masks")
    parser.add_argument("--crf-out-dir", default=None, help="folder for <id>.png CRF masks")
    args = parser.parse_args(argv)
    cfg = config_json(args.config_json, "walk", WalkParams.keys())
    args.walk = WalkParams.from_config(cfg)  # a bad value: one line naming the key
    # the CRF masks need walk.crf; json.dumps again: run() parses it like the other CRFs
    args.crf_json = json.dumps(cfg["crf"]) if args.crf_out_dir is not None else None
    if args.crf_out_dir is not None and "crf" not in cfg:
        parser.error("--crf-out-dir needs walk.crf in --config-json")
    return args


def crf_mask(image: np.ndarray, scores: torch.Tensor, classes: list[int], params: CRFParams):
    """Dense CRF on the walked scores normalised to per-pixel probabilities -> label mask."""
    probs = scores.double().clamp(min=0)
    probs = probs / probs.sum(dim=0, keepdim=True).clamp(min=1e-12)
    marginals = dense_crf(image, probs.float().cpu().numpy(), params)
    return scores_to_mask(torch.from_numpy(marginals), classes).numpy()


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    device = select_device(args.device)
    params = None
    if args.crf_json is not None:
        params = parse_crf_json(args.crf_json, "walk.crf", option="--config-json")
    net, info = load_affinity_net(args.affinity, device)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    crf_dir = Path(args.crf_out_dir) if args.crf_out_dir is not None else None
    if crf_dir is not None:
        crf_dir.mkdir(parents=True, exist_ok=True)
    with CamReader(args.store) as reader:
        ids = shard_ids(reader.ids(), args.shard, args.num_shards)
        log.info(
            "shard %d/%d: %d images; %s; CRF %s; device %s",
            args.shard, args.num_shards, len(ids), args.walk, params, device,
        )  # fmt: skip
        for image_id in tqdm(ids, desc="random walk", mininterval=10.0):
            maps, classes, image = reader.with_image(image_id, args.data_root)
            features = image_features(net, image, info, device)
            with torch.no_grad():
                maps_t = torch.from_numpy(maps).to(device)
                scores = walk_maps(maps_t, features, args.walk.alpha, **args.walk.options())
            save_mask(out_dir / f"{image_id}.png", scores_to_mask(scores, classes).cpu().numpy())
            if crf_dir is not None:
                save_mask(crf_dir / f"{image_id}.png", crf_mask(image, scores, classes, params))
    log.info("wrote %d masks to %s%s", len(ids), out_dir, f" and {crf_dir}" if crf_dir else "")
    return len(ids)


@script_main
def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
