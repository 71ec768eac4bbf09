"""The shared generator: a small tabular VAE (TVAE-style) for mixed-type records.

Both sides must agree on the architecture to exchange weights, so it lives in
the contract: nodes train it with DP-SGD (`node.training`), the coordinator
averages and samples it (`coordinator.cohort`).

Why a VAE and not a GAN. Under DP-SGD every trained parameter costs noise, and
with 40–400 records per site the signal is tiny. A VAE is one network trained
on one likelihood loss: all the privacy budget goes into the model that is
released, training is stable under heavy gradient noise, and averaging weights
across sites (FedAvg) behaves well. A DP-GAN spends its budget on a
discriminator that is thrown away, and its adversarial game is fragile under
noise and under weight averaging of non-IID sites.

What was measured (in-process FedAvg of the node's training code over the six
built-in hospitals, 15 rounds × 20 local steps, Poisson batch 64, mean
per-column shape agreement 1 − TV or 1 − KS on 3000 sampled rows):
- this VAE: 0.84 at ε = 3 per site, 0.87 without DP;
- a same-sized GAN (DP-SGD on the discriminator, Gumbel-softmax categories,
  generator and discriminator both averaged): 0.29 at ε = 3, 0.49 without DP;
- the VAE's first defaults (hidden 128, batch 32, lr 0.002, 15 × 10 steps):
  0.80 at ε = 3, which is why the plan defaults are smaller and faster.
On this budget of steps the GAN does not converge even without noise, and its
noisy discriminator gives the generator little to learn from.

The heads follow the encoding (`protocols.encoding`): a Gaussian (mean, log
σ) per continuous value, logits per one-hot block and per missingness slot.
Categories are *sampled* from the decoder's softmax rather than taken by
argmax, which keeps rare declared categories alive in the cohort.

Only Linear and ReLU layers: no BatchNorm (its batch statistics mix records,
which per-example clipping cannot bound).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from protocols.encoding import TableEncoding

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -4.0, 1.0


def _head_width(kind: str, width: int) -> int:
    return 2 if kind == "continuous" else width


class TabularVAE(nn.Module):
    """Encoder q(z|x) and decoder p(x|z) over the encoded record vector."""

    def __init__(self, encoding: TableEncoding, hidden: int, latent: int) -> None:
        super().__init__()
        self.encoding = encoding
        self.latent = latent
        data_dim = encoding.width
        out_dim = sum(_head_width(b.kind, b.width) for b in encoding.blocks)
        self.encoder = nn.Sequential(
            nn.Linear(data_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (decoder outputs, posterior mean, posterior log-variance)."""
        stats = self.encoder(x)
        mu, logvar = stats[:, :self.latent], stats[:, self.latent:].clamp(-8.0, 8.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def per_record_loss(encoding: TableEncoding, x: torch.Tensor, out: torch.Tensor,
                    mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Negative ELBO of every record (shape [batch]); DP-SGD clips per record."""
    loss = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
    missing_of = {b.column: b for b in encoding.blocks if b.kind == "missing"}
    pos = 0
    for block in encoding.blocks:
        width = _head_width(block.kind, block.width)
        head = out[:, pos:pos + width]
        target = x[:, block.start:block.stop]
        pos += width
        if block.kind == "continuous":
            mean = head[:, 0]
            log_sigma = head[:, 1].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
            nll = 0.5 * ((target[:, 0] - mean) / log_sigma.exp()).pow(2) + log_sigma
            if block.column in missing_of:
                nll = nll * (1.0 - x[:, missing_of[block.column].start])
            loss = loss + nll
        elif block.kind == "onehot":
            loss = loss + F.cross_entropy(head, target.argmax(dim=1), reduction="none")
        else:
            loss = loss + F.binary_cross_entropy_with_logits(
                head[:, 0], target[:, 0], reduction="none")
    return loss


@torch.no_grad()
def sample_encoded(model: TabularVAE, rows: int, seed: int, chunk: int = 65536) -> np.ndarray:
    """Draw `rows` hard samples in encoded space (post-processing of the weights)."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    parts = [_sample_chunk(model, min(chunk, rows - start), generator)
             for start in range(0, rows, chunk)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, model.encoding.width))


def _sample_chunk(model: TabularVAE, n: int, generator: torch.Generator) -> np.ndarray:
    z = torch.randn(n, model.latent, generator=generator)
    out = model.decoder(z)
    sample = torch.zeros(n, model.encoding.width)
    pos = 0
    for block in model.encoding.blocks:
        width = _head_width(block.kind, block.width)
        head = out[:, pos:pos + width]
        pos += width
        if block.kind == "continuous":
            sigma = head[:, 1].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX).exp()
            noise = torch.randn(n, generator=generator)
            sample[:, block.start] = head[:, 0] + sigma * noise
        elif block.kind == "onehot":
            codes = torch.multinomial(F.softmax(head, dim=1), 1, generator=generator)[:, 0]
            sample[torch.arange(n), block.start + codes] = 1.0
        else:
            draw = torch.rand(n, generator=generator)
            sample[:, block.start] = (draw < torch.sigmoid(head[:, 0])).float()
    return sample.numpy()


def build_generator(encoding: TableEncoding, hidden: int, latent: int, seed: int) -> TabularVAE:
    """A freshly initialised generator, identical for the same arguments."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TabularVAE(encoding, hidden=hidden, latent=latent)
