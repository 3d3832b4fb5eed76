"""Stage 4, the segmenter: a segmentation network (DeepLabV3+ on a timm CNN, or a light
decoder on the fine-tuned ViT) trained on the pseudo masks. ``model`` builds, saves and
reloads it, with its loss; ``train`` trains it (poly schedule, checkpoints through
``wsss_core.train``); ``predict`` predicts masks averaged over scales and flips, optionally
refined by the dense CRF; ``images`` applies a finished run to image files (``wsss predict``)."""
