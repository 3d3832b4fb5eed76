"""The report: what a run shows at the end. ``summary`` stacks the per-stage tables into the
run's summary and per-class IoU tables (never retyped); ``tables`` renders the tables the HTML
report shows as HTML pages; ``figures`` draws the figures (the same train images through every
stage, the relevance methods side by side, val predictions, training curves, runtimes)."""
