"""The harness that plays both sides on one machine: `simulate` and `demo`.

The only package that imports both `node` and `coordinator`: it validates the
user's inputs once, then runs the coordinator's ServerApp and the node's
ClientApp together in Flower's simulation engine.
"""
