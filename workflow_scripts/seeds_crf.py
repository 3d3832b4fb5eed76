"""Confident seeds from a relevance-map store with a dense CRF, PSA-style (rule crf_seeds).

For each image of this shard (the store's ids, every n-th from the shard index): the
background score (1 - max_c map_c)^alpha at a low and a high alpha, each refined with a
dense CRF on the image; confident foreground from the low-alpha result, confident
background from the high-alpha one, 255 elsewhere. Writes ``<out-dir>/<id>.png``
(palette PNGs, each written atomically).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm import tqdm

from wsss_core.cams.store import CamReader
from wsss_core.cli import add_options, config_json, script_main
from wsss_core.data.palette import save_mask
from wsss_core.seeds.crf import parse_crf_json
from wsss_core.seeds.labels import crf_seeds
from wsss_core.shards import shard_ids

log = logging.getLogger("crf_seeds")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_options(parser, "store", "data-root", "shards")
    parser.add_argument(
        "--config-json", required=True,
        help="config keys seeds.{alpha_low, alpha_high, crf} as a JSON object",
    )  # fmt: skip
    parser.add_argument("--out-dir", required=True, help="folder for <id>.png seed masks")
    args = parser.parse_args(argv)

    cfg = config_json(args.config_json, "seeds", ("alpha_low", "alpha_high", "crf"))
    args.alpha_low, args.alpha_high = float(cfg["alpha_low"]), float(cfg["alpha_high"])
    params = parse_crf_json(json.dumps(cfg["crf"]), "seeds.crf", option="--config-json")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with CamReader(args.store) as reader:
        ids = shard_ids(reader.ids(), args.shard, args.num_shards)
        log.info(
            "shard %d/%d: %d images; alphas %g/%g; %s",
            args.shard,
            args.num_shards,
            len(ids),
            args.alpha_low,
            args.alpha_high,
            params,
        )
        for image_id in tqdm(ids, desc="crf seeds"):
            maps, classes, image = reader.with_image(image_id, args.data_root)
            seeds = crf_seeds(image, maps, classes, args.alpha_low, args.alpha_high, params)
            save_mask(out_dir / f"{image_id}.png", seeds)
    log.info("wrote %d seed masks to %s", len(ids), out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
