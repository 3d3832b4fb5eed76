"""Stage 3c, the random walk (PSA): the relevance maps, with the background score in front,
are propagated with the transition matrix D^-1 A^beta of the AffinityNet's affinities, run
2^logt steps, and their argmax (each map back at its pre-walk peak with
``walk.normalise``) is the pseudo mask. ``walk`` holds the transition matrix, the
sparse walk and PSA's dense reference, one image's walk and the mask; ``ceiling`` compares
the walk on the learned affinities with the walk on ground-truth affinities."""
