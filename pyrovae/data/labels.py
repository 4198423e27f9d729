"""Class labels for conditional and semi-supervised training.

An unlabelled point has the label ``-1`` (scikit-learn's convention for
semi-supervised data, ``sklearn.semi_supervised``). :func:`keep_balanced`
hides all but ``n`` labels of a fully labelled set, as many of each class as
it can, with a seeded choice.
"""

from __future__ import annotations

import torch

from pyrovae.errors import DataError

#: The label of a point whose class is not known.
UNLABELLED = -1


def keep_balanced(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """A copy of ``labels`` with all but ``n`` of them set to :data:`UNLABELLED`.

    The kept labels are spread over the classes as evenly as they can be (the
    first ``n % n_classes`` classes get one more), each class's chosen at
    random with ``seed``. A class with too few points gives all it has, and
    the rest go to the other classes.
    """
    device, labels = labels.device, labels.cpu()
    known = labels[labels >= 0]
    if n > known.numel():
        raise DataError(
            f"--labeled {n} asks for more labels than the {known.numel()} training points have"
        )
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(known).tolist()
    pools = {c: torch.nonzero(labels == c).flatten() for c in classes}
    pools = {c: p[torch.randperm(p.numel(), generator=generator)] for c, p in pools.items()}
    quota = dict.fromkeys(classes, 0)
    left = n
    while left > 0:  # one more per class in turn, skipping classes with none left
        for c in classes:
            if left > 0 and quota[c] < pools[c].numel():
                quota[c] += 1
                left -= 1
    kept = torch.cat([pools[c][: quota[c]] for c in classes])
    out = torch.full_like(labels, UNLABELLED)
    out[kept] = labels[kept]
    return out.to(device)
