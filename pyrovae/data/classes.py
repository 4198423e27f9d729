"""The names of the classes of the named data sets, for legends and tables.

Fashion-MNIST's names are those of Xiao, Rasul & Vollgraf (2017),
"Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", in label order. Keyed by the data set's name as
:func:`pyrovae.data.load.load_dataset` takes it.
"""

from __future__ import annotations

_DIGITS = tuple(str(digit) for digit in range(10))

#: Class names by data set name, index = label.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": _DIGITS,
    "mnist": _DIGITS,
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


def class_names(dataset: str) -> tuple[str, ...] | None:
    """The names of ``dataset``'s classes in label order, or ``None`` when unknown
    (a file or folder of one's own; its labels are shown as numbers)."""
    return CLASS_NAMES.get(dataset.strip().lower().replace("_", "-"))


def class_name(dataset: str, label: int) -> str:
    """The name of class ``label`` of ``dataset``; the number itself when there is none."""
    names = class_names(dataset)
    return names[label] if names is not None and 0 <= label < len(names) else str(label)
