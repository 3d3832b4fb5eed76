"""The report: what a run shows at the end. ``summary`` stacks the per-stage tables into the
run's summary and per-class IoU tables (never retyped); ``figures`` draws the qualitative
figures (image, ground truth, relevance maps, seeds, walked and predicted masks)."""
