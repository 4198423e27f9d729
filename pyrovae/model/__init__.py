"""The model layer: networks, likelihoods, priors, guides and the VAE's Pyro model/guide pair.

Nothing here knows about epochs, files or data sets: a model is built from a
:class:`~pyrovae.config.ModelConfig` and evaluated on tensors.
"""
