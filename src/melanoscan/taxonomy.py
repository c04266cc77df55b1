"""The project's class vocabulary and its mapping to the HAM10000 / ISIC 2018 codes.

melanoscan classifies into the 9 classes of the ISIC "skin cancer" assignment set. HAM10000 and
the ISIC 2018 Task 3 challenge use 7 diagnosis codes. The two taxonomies do not nest perfectly,
so the mapping is a documented design decision (see ``docs/TAXONOMY.md``):

=============================  ========  ===========================================
9-class name                   ISIC2018  note
=============================  ========  ===========================================
actinic_keratosis              akiec     akiec = actinic keratosis + Bowen's disease
basal_cell_carcinoma           bcc
dermatofibroma                 df
melanoma                       mel
nevus                          nv
pigmented_benign_keratosis     bkl       bkl = seborrheic keratosis, solar lentigo, LPLK
seborrheic_keratosis           bkl       a subtype of bkl
squamous_cell_carcinoma        akiec     Bowen's disease is SCC in situ
vascular_lesion                vasc
=============================  ========  ===========================================

Going from 9 to 7 classes is many-to-one and exact. Going from 7 to 9 (reading HAM10000 labels)
chooses one class per code: ``akiec -> actinic_keratosis`` and ``bkl ->
pigmented_benign_keratosis``; the manifest always keeps the original code next to the mapped
label, so nothing is silently relabelled.

The other ISIC challenges (2016, 2017, 2019, 2020) are read into the same 9 classes
(:data:`FROM_ISIC2019`, :data:`FROM_ISIC2020`); each row keeps its source's ``taxonomy``, and
:func:`possible_classes` says which classes its label may stand for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

CLASSES: tuple[str, ...] = (
    "actinic_keratosis",
    "basal_cell_carcinoma",
    "dermatofibroma",
    "melanoma",
    "nevus",
    "pigmented_benign_keratosis",
    "seborrheic_keratosis",
    "squamous_cell_carcinoma",
    "vascular_lesion",
)
"""The 9 class names, in the order of every model's output."""

MELANOMA = "melanoma"
ISIC2018 = "isic2018"
"""The manifest's ``taxonomy`` value of rows labelled with a 7-code (HAM10000 / ISIC 2018) label."""

DISPLAY_NAMES: dict[str, str] = {name: name.replace("_", " ").capitalize() for name in CLASSES}

ISIC2018_CODES: tuple[str, ...] = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
"""The 7 HAM10000 / ISIC 2018 Task 3 codes, in the challenge's column order."""

TO_ISIC2018: dict[str, str] = {
    "actinic_keratosis": "akiec",
    "basal_cell_carcinoma": "bcc",
    "dermatofibroma": "df",
    "melanoma": "mel",
    "nevus": "nv",
    "pigmented_benign_keratosis": "bkl",
    "seborrheic_keratosis": "bkl",
    "squamous_cell_carcinoma": "akiec",
    "vascular_lesion": "vasc",
}

FROM_ISIC2018: dict[str, str] = {
    "akiec": "actinic_keratosis",
    "bcc": "basal_cell_carcinoma",
    "bkl": "pigmented_benign_keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "nevus",
    "vasc": "vascular_lesion",
}


def normalise_name(name: str) -> str:
    """Lower-case a label and collapse spaces, hyphens and underscores into one underscore."""
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


_ALIASES: dict[str, str] = {normalise_name(c): c for c in CLASSES}


def class_from_folder(folder_name: str) -> str | None:
    """The 9-class name for a folder name (case- and space-insensitive), or None if unknown."""
    return _ALIASES.get(normalise_name(folder_name))


def from_isic2018(code: str) -> str:
    """Map a HAM10000 / ISIC 2018 code (any case) to the project's 9-class name."""
    key = code.strip().lower()
    if key not in FROM_ISIC2018:
        raise ValueError(f"unknown ISIC 2018 code {code!r}; known: {', '.join(ISIC2018_CODES)}")
    return FROM_ISIC2018[key]


def to_isic2018(name: str) -> str:
    """Map a 9-class name to its HAM10000 / ISIC 2018 code."""
    if name not in TO_ISIC2018:
        raise ValueError(f"unknown class {name!r}; known: {', '.join(CLASSES)}")
    return TO_ISIC2018[name]


def isic2018_probabilities(
    probabilities: np.ndarray, classes: Sequence[str] = CLASSES
) -> np.ndarray:
    """Collapse (N, 9) class probabilities into (N, 7) ISIC 2018 probabilities by summing.

    Columns follow :data:`ISIC2018_CODES`. Summing is the right way to score a 9-class model on
    7-class ground truth: P(bkl) = P(pigmented benign keratosis) + P(seborrheic keratosis).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(classes):
        raise ValueError(f"expected shape (N, {len(classes)}), got {probabilities.shape}")
    out = np.zeros((probabilities.shape[0], len(ISIC2018_CODES)), dtype=np.float64)
    for column, name in enumerate(classes):
        out[:, ISIC2018_CODES.index(to_isic2018(name))] += probabilities[:, column]
    return out


ISIC9 = "isic9"
"""The ``taxonomy`` of rows labelled by a 9-class folder name."""
ISIC2017 = "isic2017"
"""The ``taxonomy`` of ISIC 2017 Part 3 ground truth: melanoma, seborrheic keratosis or nevus."""
ISIC2019 = "isic2019"
"""The ``taxonomy`` of ISIC 2019 ground truth (``BKL`` covers two of the 9 classes)."""
ISIC2020 = "isic2020"
"""The ``taxonomy`` of ISIC 2020 ground truth (diagnosis names)."""
ISIC2016 = "isic2016"
"""The ``taxonomy`` of ISIC 2016 ground truth (malignant = melanoma)."""

ISIC2019_CODES: tuple[str, ...] = ("mel", "nv", "bcc", "ak", "bkl", "df", "vasc", "scc")
"""The 8 diagnosis columns of the ISIC 2019 ground truth (lower-cased), in the challenge's order;
its ninth column, ``UNK``, is no diagnosis."""

FROM_ISIC2019: dict[str, str] = {
    "mel": "melanoma",
    "nv": "nevus",
    "bcc": "basal_cell_carcinoma",
    "ak": "actinic_keratosis",
    "bkl": "pigmented_benign_keratosis",
    "df": "dermatofibroma",
    "vasc": "vascular_lesion",
    "scc": "squamous_cell_carcinoma",
}

FROM_ISIC2020: dict[str, str] = {
    "nevus": "nevus",
    "melanoma": "melanoma",
    "seborrheic_keratosis": "seborrheic_keratosis",
    "lentigo_nos": "pigmented_benign_keratosis",
    "solar_lentigo": "pigmented_benign_keratosis",
    "lichenoid_keratosis": "pigmented_benign_keratosis",
}
"""ISIC 2020 ``diagnosis`` values (after :func:`normalise_name`) that name one of the 9 classes.
Every other value (``unknown``, cafe-au-lait macule, atypical melanocytic proliferation) does
not, and its rows are skipped."""

CHALLENGE_TAXONOMIES: frozenset[str] = frozenset({ISIC2016, ISIC2017, ISIC2018, ISIC2019, ISIC2020})
"""Taxonomies of official ground-truth files (challenge CSVs, HAM10000 metadata), which outrank a
class folder when sources disagree and the authority cleaning option is on."""


def possible_classes(label: str, taxonomy: str) -> frozenset[str]:
    """The 9-class names a row's label may stand for, given the resolution of its source.

    A 9-class folder, ISIC 2017, 2016 and 2020 labels are exact. A 7-code label (``isic2018``)
    stands for every class of its code (``akiec``: actinic keratosis or squamous cell carcinoma);
    an ISIC 2019 ``BKL`` for pigmented benign or seborrheic keratosis.
    """
    if taxonomy == ISIC2018 or (taxonomy == ISIC2019 and to_isic2018(label) == "bkl"):
        code = to_isic2018(label)
        return frozenset(name for name in CLASSES if TO_ISIC2018[name] == code)
    return frozenset({label})


def is_exact(label: str, taxonomy: str) -> bool:
    """Whether a row's label names exactly one of the 9 classes."""
    return len(possible_classes(label, taxonomy)) == 1


def labels_compatible(label_a: str, taxonomy_a: str, label_b: str, taxonomy_b: str) -> bool:
    """Whether two labels of the same image agree, at the finest resolution both sources have.

    Two exact labels must be equal. A 7-code label (``taxonomy == "isic2018"``) only says the
    ISIC 2018 code, so it agrees with any 9-class label of that code: HAM10000 ``akiec`` and an
    isic9 ``squamous_cell_carcinoma`` folder are compatible, ``nv`` and ``melanoma`` are not.
    """
    return bool(possible_classes(label_a, taxonomy_a) & possible_classes(label_b, taxonomy_b))


def labels_agree(labels: Iterable[tuple[str, str]]) -> bool:
    """Whether all ``(label, taxonomy)`` pairs given for one image are pairwise compatible."""
    distinct = sorted(set(labels))
    return all(
        labels_compatible(a, ta, b, tb)
        for index, (a, ta) in enumerate(distinct)
        for b, tb in distinct[index + 1 :]
    )
