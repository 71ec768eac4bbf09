"""The marginals family: noisy column, then pair count tables, and a Chow–Liu tree sampler."""
