"""The likelihoods of the model; importing the package registers the built-in ones."""

from pyrovae.model.likelihoods import bernoulli, continuous_bernoulli, gaussian  # noqa: F401  (registers them)
from pyrovae.model.likelihoods.base import LIKELIHOODS, Likelihood

__all__ = ["LIKELIHOODS", "Likelihood"]
