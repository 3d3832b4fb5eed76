"""Stage 3a, seeds: label maps from relevance maps and PSA's background score (1 - max_c
map_c)^alpha (or a fixed background score), and PSA's confident seeds: a small and a large
alpha, each refined by a dense CRF, give confident foreground and confident background, the
rest is unsure (255). ``labels`` makes the label maps and seeds; ``crf`` is the dense CRF
(also used to refine the random walk and the segmenter)."""
