"""The single model contract (``InvertibleModel``), the structure of a latent (tensors or nested
lists/dicts of them, flattened per sample), and the parameter fingerprint that tells whether an
audit changed the model.
"""
