"""The encoder's input for incomplete data: the observed values and where they are.

Missing values (NaN) are set to 0 and the mask of observed values is stacked
onto the data point along its first dimension, so an image ``(C, H, W)``
reaches the encoder as ``(2C, H, W)`` (a mask channel per channel) and a vector
``(D,)`` as ``(2D,)``: the convolutional, fully connected and linear networks
are built for that shape unchanged, and the guide heads (flows included) read
the encoder's features as always. Zero-filling alone (Mattei & Frellsen 2019,
"MIWAE") cannot tell a missing value from an observed 0; the mask channel
(Nazabal et al. 2020, "HI-VAE"; Ipsen et al. 2021, "not-MIWAE") can.
"""

from __future__ import annotations

import torch
from torch import nn


def with_mask_shape(data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a data point with its mask stacked on: the first dimension doubled."""
    return (2 * data_shape[0], *data_shape[1:])


class ObservedInput(nn.Module):
    """``encoder`` applied to the observed values (missing ones as 0) and their mask.

    Parameters
    ----------
    encoder
        The network's encoder, built for :func:`with_mask_shape` of the data
        shape when ``mask_channels``, else for the data shape itself.
    data_shape
        The shape of one data point.
    mask_channels
        Stack the mask onto the values; ``False`` passes the zero-filled values
        alone (for an encoder that only reads the data shape).
    """

    def __init__(
        self, encoder: nn.Module, data_shape: tuple[int, ...], mask_channels: bool
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.data_shape = tuple(data_shape)
        self.mask_channels = mask_channels
        self.out_features = encoder.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        observed = ~torch.isnan(x)  # (..., *data_shape)
        filled = torch.where(observed, x, 0.0)
        if not self.mask_channels:
            return self.encoder(filled)
        dim = x.dim() - len(self.data_shape)
        return self.encoder(torch.cat([filled, observed.to(x.dtype)], dim=dim))  # (..., 2C, ...)
