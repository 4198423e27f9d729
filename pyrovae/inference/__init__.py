"""The inference layer: the training objectives and every Monte Carlo estimator.

ELBO and IWAE objectives (:mod:`~pyrovae.inference.objectives`), importance-sampled
log p(x) (:mod:`~pyrovae.inference.importance`), per-point q*
(:mod:`~pyrovae.inference.local`), inference gaps, ELBO surgery, PSIS and a NUTS
reference posterior; each estimator is tested against closed forms in
``tests/inference/``.
"""
