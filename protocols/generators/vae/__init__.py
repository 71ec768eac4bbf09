"""The VAE family: DP-SGD on a small tabular VAE, averaged over many rounds (FedAvg)."""
