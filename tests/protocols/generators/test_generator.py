"""The generator's fast sampling path computes exactly what its training path does."""

import torch

from protocols.encoding import build_encoding
from protocols.generators.vae.model import build_generator, featurize


def test_decoding_one_column_gives_that_columns_heads_of_the_full_decoder(demo_schema):
    model = build_generator(build_encoding(demo_schema), hidden=32, latent=4, seed=3)
    x = torch.rand(64, model.encoding.width)
    z = torch.randn(64, model.latent)
    full = model.decode(z, x)
    features = featurize(model.encoding, x)
    state = model.sampling_state(z)
    for column in range(model.positions.shape[0]):
        heads = model.head_slices[column]
        assert torch.allclose(model.decode_column(state, column), full[:, heads],
                              atol=1e-5), column
        state = model.with_drawn(state, column, features[:, heads])
