"""The one inference loop: TTA, batches with unreadable files, the same answer on every path."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoscan.evaluation.evaluate import EvaluationError, evaluate, taxonomy_logits
from melanoscan.inference.engine import MicroBatcher, decoded_batches, dihedral_views, forward
from melanoscan.inference.predictor import Predictor
from melanoscan.preprocess import Preprocessing
from melanoscan.taxonomy import CLASSES
from tests.conftest import lesion_image, random_image


def test_dihedral_views_are_the_eight_symmetries() -> None:
    pixels = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1)
    views = dihedral_views(pixels)
    assert len(views) == 8
    np.testing.assert_array_equal(views[0], pixels)
    distinct = {v.tobytes() for v in (np.ascontiguousarray(v) for v in views)}
    assert len(distinct) == 8


def test_forward_averages_the_logits_of_every_view() -> None:
    recipe = Preprocessing(8)  # normalise only: any pixel size
    calls: list[np.ndarray] = []

    def run(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        calls.append(inputs)
        assert inputs.flags["C_CONTIGUOUS"] and inputs.dtype == np.float32
        # A "model" that reads one corner pixel: each view shows it another corner.
        return inputs[:, :1, 0, 0].copy(), inputs.mean(axis=(2, 3))

    pixels = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    pixels[0, 0, 0] = 255  # top-left corner lit: 2 of the 8 views keep it there
    out = forward(run, recipe, pixels, tta=True)
    assert len(calls) == 8
    np.testing.assert_allclose(out.logits, [[1.0]])
    np.testing.assert_allclose(out.tta_logits, [[2 / 8]])
    assert out.features is not None and out.features.shape == (1, 3)
    plain = forward(run, recipe, pixels, tta=False)
    assert plain.tta_logits is None and len(calls) == 9


def test_decoded_batches_count_misses_and_keep_order(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        if i == 2:
            path.write_bytes(b"not an image")
        else:
            lesion_image(i, 40).save(path)
        paths.append(path)
    recipe = Preprocessing(32)
    batches = list(decoded_batches(paths, 2, recipe))
    assert [b.rows for b in batches] == [[0, 1], [3], [4]]
    assert batches[1].unreadable and batches[1].unreadable[0][0] == 2
    assert [b.pixels.shape for b in batches] == [(2, 32, 32, 3), (1, 32, 32, 3), (1, 32, 32, 3)]
    assert batches[0].sizes == [(40, 40), (40, 40)]
    np.testing.assert_array_equal(batches[0].pixels[1], recipe.resize(lesion_image(1, 40)))
    # Decoding the next batch on a thread changes nothing but the timing.
    in_turn = list(decoded_batches(paths, 2, recipe, prefetch=False))
    assert [b.rows for b in in_turn] == [b.rows for b in batches]
    for a, b in zip(in_turn, batches, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
    with pytest.raises(ValueError, match="batch_size"):
        list(decoded_batches(paths, 0, recipe))


def test_tta_prediction_does_not_change_when_the_image_is_flipped(tiny_bundle: Path) -> None:
    predictor = Predictor(tiny_bundle, backend="torch", use_gate=False)
    image = random_image(3, (32, 32))  # the model's size: resizing changes nothing
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rotated = image.transpose(Image.Transpose.ROTATE_90)
    plain = [p.probabilities for p in predictor.predict([image, flipped])]
    assert plain[0] != pytest.approx(plain[1], abs=1e-5)  # the model alone is not invariant
    averaged = predictor.predict([image, flipped, rotated], tta=True)
    for other in averaged[1:]:
        assert other.probabilities == pytest.approx(averaged[0].probabilities, abs=1e-6)


def test_score_files_matches_predict_on_both_backends(onnx_bundle: Path, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        lesion_image(20 + i, 52).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    paths.insert(1, tmp_path / "broken.jpg")
    for backend in ("torch", "onnx"):
        predictor = Predictor(onnx_bundle, backend=backend)
        outputs = predictor.score_files(paths, tta=True, features=True)
        assert outputs.backend == backend and outputs.classes == predictor.classes
        assert np.isnan(outputs.logits["plain"][1]).all()
        assert [u["path"] for u in outputs.unreadable] == [str(paths[1])]
        assert outputs.features is not None and np.isnan(outputs.features[1]).all()
        predictions, skipped = predictor.predict_files(paths, tta=True)
        assert [s.path for s in skipped] == [str(paths[1])]
        probabilities = np.exp(outputs.logits["tta"][[0, 2, 3]] / predictor.temperature)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        expected = [[p.probabilities[c] for c in predictor.classes] for p in predictions]
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_evaluate_scores_the_onnx_model_users_run(onnx_bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(4):
        for name in ("melanoma", "nevus"):
            (data / name).mkdir(parents=True, exist_ok=True)
            lesion_image(300 + i + (10 if name == "nevus" else 0), 48).save(
                data / name / f"{i}.png")
    reports = {backend: evaluate(Predictor(onnx_bundle, backend=backend), [data],
                                 bootstrap_samples=10, show_progress=False)
               for backend in ("onnx", "torch")}
    assert reports["onnx"].report["model"]["backend"] == "onnx"
    assert reports["torch"].report["model"]["backend"] == "torch"
    np.testing.assert_allclose(reports["onnx"].probabilities["plain"],
                               reports["torch"].probabilities["plain"], atol=1e-4)


def test_scores_follow_the_model_class_order_not_column_position() -> None:
    logits = np.arange(len(CLASSES), dtype=np.float32)[None]
    shuffled = list(reversed(CLASSES))
    reordered = taxonomy_logits(logits, shuffled)
    # Column j of the model is class shuffled[j]; the taxonomy's first class is its last column.
    assert reordered[0, 0] == logits[0, -1] and reordered[0, -1] == logits[0, 0]
    with pytest.raises(EvaluationError, match="not melanoscan's"):
        taxonomy_logits(logits[:, :3], CLASSES[:3])


def test_micro_batcher_merges_concurrent_calls_and_splits_the_answers() -> None:
    release = threading.Event()
    sizes: list[int] = []

    def run(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        sizes.append(len(inputs))
        if len(sizes) == 1:
            release.wait(5)  # hold the first pass while the others queue up
        return inputs[:, :2, 0, 0] * 2, inputs[:, 0, 0, :1]

    batcher = MicroBatcher(run, max_batch=32)
    calls = [np.full((n, 3, 2, 2), float(i), dtype=np.float32) for i, n in enumerate([1, 2, 1, 3])]
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(batcher, calls[0])
        while not sizes:
            time.sleep(0.001)
        rest = [pool.submit(batcher, c) for c in calls[1:]]
        while batcher._jobs.qsize() < 3:
            time.sleep(0.001)
        release.set()
        answers = [first.result(5)] + [f.result(5) for f in rest]
    assert sizes == [1, 6] and batcher.passes == 2  # the three waiting calls went as one
    for i, (inputs, (logits, features)) in enumerate(zip(calls, answers, strict=True)):
        assert logits.shape == (len(inputs), 2) and (logits == 2 * i).all()
        assert features is not None and (features == i).all()


def test_micro_batcher_gives_each_caller_the_error_and_keeps_serving() -> None:
    def run(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if (inputs < 0).any():
            raise RuntimeError("bad batch")
        return inputs[:, :1, 0, 0], None

    batcher = MicroBatcher(run)
    with pytest.raises(RuntimeError, match="bad batch"):
        batcher(np.full((1, 3, 2, 2), -1.0, dtype=np.float32))
    logits, features = batcher(np.ones((2, 3, 2, 2), dtype=np.float32))
    assert logits.shape == (2, 1) and features is None


def test_a_micro_batching_predictor_answers_as_a_plain_one(onnx_bundle: Path) -> None:
    images = [lesion_image(40 + i, 48) for i in range(6)]
    plain = Predictor(onnx_bundle).predict(images)
    batching = Predictor(onnx_bundle, micro_batching=True)
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda image: batching.predict([image])[0], images))
    for expected, answer in zip(plain, answers, strict=True):
        assert answer.probabilities == pytest.approx(expected.probabilities, abs=1e-5)
