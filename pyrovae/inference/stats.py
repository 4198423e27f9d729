"""Standard errors of Monte Carlo estimates: over data points, and of the draws themselves."""

from __future__ import annotations

import math

import torch


def standard_error(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values`` over its entries (NaN for one)."""
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else math.nan


def mc_standard_error(variances: torch.Tensor) -> float:
    """Monte Carlo standard error of a mean of independent estimates with ``variances``."""
    return float(variances.sum().sqrt() / variances.numel())
