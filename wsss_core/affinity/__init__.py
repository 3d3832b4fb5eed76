"""Stage 3b, affinity (PSA, Ahn & Kwak, CVPR 2018): an AffinityNet learns features whose L1
distances give pixel affinities a_ij = exp(-mean|f_i - f_j|), from the pairs of confident
seeds within a radius (same class 1, different 0, unsure ignored). ``pairs`` holds the
neighbour offsets, pair labels, pair affinities and the balanced loss; ``net`` the network on
the classifier's ViT or a timm CNN; ``train`` its training with resume."""
