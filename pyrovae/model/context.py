"""What every component of one model is built with, besides its own options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelContext:
    """The shape of one data point, the size of z, and the chosen class of each kind.

    Components read the other components' declared capabilities here (the
    VampPrior asks whether the guide can score any z), never their names.
    """

    #: ``None`` only while a config is checked before its data are read.
    data_shape: tuple[int, ...] | None
    n_latent: int
    classes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one data point, for building (the data have been read)."""
        if self.data_shape is None:
            raise ValueError("the model context has no data shape yet")
        return self.data_shape

    @property
    def event_dims(self) -> int:
        """How many trailing dimensions one data point spans (3 for ``(C, H, W)``)."""
        if self.data_shape is None:
            raise ValueError("the model context has no data shape yet")
        return len(self.data_shape)
