"""pyrovae: variational autoencoders on Pyro."""
