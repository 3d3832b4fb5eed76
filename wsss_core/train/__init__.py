"""The one training loop of the three networks (classifier, AffinityNet, segmenter). ``loop``
runs the epochs, writes the history and decides whether a checkpoint resumes a run (its
fingerprint: settings, seed, digest of the input files), and gives the seeded data loader;
``checkpoint`` saves and loads checkpoints that hold no pickled objects; ``digest`` hashes
the input files; ``schedules`` are the learning-rate schedules; ``settings`` the checks
shared by the trainers' settings."""
