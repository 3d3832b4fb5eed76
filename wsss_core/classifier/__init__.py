"""Stage 1, the classifier: a timm Vision Transformer fine-tuned as a multi-label classifier on
image-level labels (the background is never a label). ``model`` builds it from the
``classifier`` config section, loads backbone weights and saves/reloads the trained model;
``stem`` is the demo hybrid's convolutional stem; ``train`` is the fine-tuning (AdamW or SGD,
warm-up and cosine schedule, per-epoch validation and checkpoints through ``wsss_core.train``);
``metrics`` scores multi-label predictions (per-class average precision, F1)."""
