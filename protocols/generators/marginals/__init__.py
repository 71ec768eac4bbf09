"""The marginals family: noisy column, then pair count tables, and a graphical-model sampler."""
