"""Stage 5, evaluation: every stage is scored against ground-truth masks with a confusion
matrix over the classes (255 ignored). ``metrics`` holds the confusion matrix and its scores
(per-class IoU, mIoU, precision, recall, pixel accuracy); ``masks`` scores folders of masks
and writes the per-stage summary and per-class tables; ``sweep`` sweeps the seeds' background
parameter over a relevance-map store and picks the best."""
