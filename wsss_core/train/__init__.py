"""The one training loop of the three networks: checkpoints that hold no pickled objects,
the fingerprint (settings, seed, digest of the input files) that decides whether a
checkpoint resumes a run, and the learning-rate schedules."""
