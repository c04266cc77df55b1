import numpy as np
import pytest

from melanoscan import taxonomy


def test_every_class_maps_to_a_code_and_codes_round_trip() -> None:
    assert len(taxonomy.CLASSES) == 9
    assert set(taxonomy.TO_ISIC2018) == set(taxonomy.CLASSES)
    assert set(taxonomy.TO_ISIC2018.values()) == set(taxonomy.ISIC2018_CODES)
    for code in taxonomy.ISIC2018_CODES:
        assert taxonomy.to_isic2018(taxonomy.from_isic2018(code)) == code


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("Melanoma", "melanoma"),
        ("basal cell carcinoma", "basal_cell_carcinoma"),
        ("  Pigmented  Benign-Keratosis ", "pigmented_benign_keratosis"),
        ("holiday", None),
    ],
)
def test_folder_names(folder: str, expected: str | None) -> None:
    assert taxonomy.class_from_folder(folder) == expected


def test_unknown_codes_and_classes_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown ISIC 2018 code"):
        taxonomy.from_isic2018("scc")
    with pytest.raises(ValueError, match="unknown class"):
        taxonomy.to_isic2018("mole")


def test_probabilities_collapse_by_summing() -> None:
    probabilities = np.zeros((1, 9))
    probabilities[0, taxonomy.CLASSES.index("pigmented_benign_keratosis")] = 0.3
    probabilities[0, taxonomy.CLASSES.index("seborrheic_keratosis")] = 0.2
    probabilities[0, taxonomy.CLASSES.index("melanoma")] = 0.5
    collapsed = taxonomy.isic2018_probabilities(probabilities)
    assert collapsed.shape == (1, 7)
    assert collapsed[0, taxonomy.ISIC2018_CODES.index("bkl")] == pytest.approx(0.5)
    assert collapsed[0, taxonomy.ISIC2018_CODES.index("mel")] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="expected shape"):
        taxonomy.isic2018_probabilities(np.zeros((2, 7)))


def test_compatibility_respects_resolution() -> None:
    ok = taxonomy.labels_compatible
    assert ok("squamous_cell_carcinoma", "isic9", "actinic_keratosis", "isic2018")
    assert not ok("squamous_cell_carcinoma", "isic9", "actinic_keratosis", "isic9")
    assert not ok("melanoma", "isic2018", "nevus", "isic9")
    assert taxonomy.labels_agree([("nevus", "isic9"), ("nevus", "isic2018")])
    assert not taxonomy.labels_agree(
        [("seborrheic_keratosis", "isic9"), ("melanoma", "isic9"), ("melanoma", "isic2018")]
    )


@pytest.mark.parametrize(
    ("label", "kind", "expected"),
    [
        ("squamous_cell_carcinoma", "isic9", {"squamous_cell_carcinoma"}),
        ("melanoma", "isic2016", {"melanoma"}),
        ("seborrheic_keratosis", "isic2017", {"seborrheic_keratosis"}),
        ("nevus", "isic2017", {"nevus"}),
        ("actinic_keratosis", "isic2018", {"actinic_keratosis", "squamous_cell_carcinoma"}),
        ("pigmented_benign_keratosis", "isic2018",
         {"pigmented_benign_keratosis", "seborrheic_keratosis"}),
        ("melanoma", "isic2018", {"melanoma"}),
        # ISIC 2019 splits akiec into AK and SCC, but its BKL still covers both keratoses.
        ("actinic_keratosis", "isic2019", {"actinic_keratosis"}),
        ("squamous_cell_carcinoma", "isic2019", {"squamous_cell_carcinoma"}),
        ("pigmented_benign_keratosis", "isic2019",
         {"pigmented_benign_keratosis", "seborrheic_keratosis"}),
        ("pigmented_benign_keratosis", "isic2020", {"pigmented_benign_keratosis"}),
        ("seborrheic_keratosis", "isic2020", {"seborrheic_keratosis"}),
    ],
)
def test_possible_classes_follow_each_taxonomy(label: str, kind: str, expected: set[str]) -> None:
    assert taxonomy.possible_classes(label, kind) == expected
    assert taxonomy.is_exact(label, kind) == (len(expected) == 1)


@pytest.mark.parametrize(
    ("a", "b", "compatible"),
    [
        (("seborrheic_keratosis", "isic9"), ("melanoma", "isic2017"), False),
        (("seborrheic_keratosis", "isic9"), ("seborrheic_keratosis", "isic2017"), True),
        (("seborrheic_keratosis", "isic2017"), ("pigmented_benign_keratosis", "isic2018"), True),
        (("seborrheic_keratosis", "isic2017"), ("pigmented_benign_keratosis", "isic2019"), True),
        (("seborrheic_keratosis", "isic2017"), ("pigmented_benign_keratosis", "isic2020"), False),
        (("pigmented_benign_keratosis", "isic2019"), ("pigmented_benign_keratosis", "isic2018"),
         True),
        (("squamous_cell_carcinoma", "isic2019"), ("actinic_keratosis", "isic2018"), True),
        (("squamous_cell_carcinoma", "isic2019"), ("actinic_keratosis", "isic2019"), False),
        (("squamous_cell_carcinoma", "isic9"), ("actinic_keratosis", "isic2019"), False),
        (("nevus", "isic9"), ("actinic_keratosis", "isic2018"), False),
        (("melanoma", "isic2016"), ("melanoma", "isic2020"), True),
        (("melanoma", "isic2016"), ("nevus", "isic2017"), False),
    ],
)
def test_compatibility_across_taxonomies(
    a: tuple[str, str], b: tuple[str, str], compatible: bool
) -> None:
    assert taxonomy.labels_compatible(*a, *b) is compatible
    assert taxonomy.labels_compatible(*b, *a) is compatible  # symmetric
    assert taxonomy.labels_agree([a, b]) is compatible


def test_challenge_mappings_name_known_classes() -> None:
    assert set(taxonomy.FROM_ISIC2019) == set(taxonomy.ISIC2019_CODES)
    assert set(taxonomy.FROM_ISIC2019.values()) | set(taxonomy.FROM_ISIC2020.values()) <= set(
        taxonomy.CLASSES
    )
    assert taxonomy.ISIC9 not in taxonomy.CHALLENGE_TAXONOMIES
    assert {"isic2016", "isic2017", "isic2018", "isic2019", "isic2020"} == set(
        taxonomy.CHALLENGE_TAXONOMIES
    )
