"""The dermoscopy gate on real dermoscopy, non-dermoscopy and degraded dermoscopy, and its cost.

Every image goes through ``Predictor.predict_files``, the path ``melanoscan predict`` takes.

* real dermoscopy: ISIC 2018 Task 3 test (1,512), isic9/Test (118), isic2017 (2,144): how many
  are wrongly flagged ``not_dermoscopy`` (target <= 2% each) and ``poor_quality``;
* non-dermoscopy, per kind, from ``benchmarks/negatives.py`` (its ``test`` split by default):
  how many are flagged (target >= 95% per kind);
* degraded dermoscopy, per degradation and severity level: how many are flagged
  ``poor_quality`` (target >= 90%), and the level where that starts;
* cost: end-to-end prediction time with the gate against the same without it (``--timing``).

    python benchmarks/negatives.py --out /tmp/melanoscan-negatives
    python benchmarks/gate.py --negatives /tmp/melanoscan-negatives --timing
    python benchmarks/gate.py --model runs/loso_isic2017/bundle --backend torch \
        --negatives /tmp/melanoscan-negatives --name gate_loso_isic2017

``--limit N`` takes the first N images of each dermoscopy set and of each negative kind (for a
quick look; the table says so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from _report import RESULTS, command, machine, update_section, write_results
from negatives import DEGRADATIONS

from melanoscan.bundle import resolve_bundle_path
from melanoscan.gate import NOT_DERMOSCOPY, POOR_QUALITY
from melanoscan.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DERMOSCOPY = {
    "ISIC 2018 test": DATA / "isic2018_task3_test",
    "isic9/Test": DATA / "isic9" / "Test",
    "isic2017": DATA / "isic2017",
}
KINDS = ("clinical", "clinical_no_watermark", "everyday", "documents", "medical", "synthetic")
TARGET_REAL, TARGET_NEGATIVE, TARGET_DEGRADED, TARGET_COST = 0.02, 0.95, 0.90, 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--negatives", type=Path, required=True,
                        help="folder written by benchmarks/negatives.py")
    parser.add_argument("--split", default="test", help="negative split to score (dev, test)")
    parser.add_argument("--limit", type=int, default=None, help="images per set or kind")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--timing", action="store_true", help="also measure the gate's cost")
    parser.add_argument("--timing-only", action="store_true",
                        help="only measure the cost (on an idle machine) and add it to the last "
                             "results of --name")
    parser.add_argument("--name", default="gate",
                        help="results file and BENCHMARKS.md section (another model: another "
                             "name, e.g. gate_loso_isic2017)")
    args = parser.parse_args()

    predictor = Predictor(args.model, backend=args.backend)
    if predictor.gate is None:
        parser.error(f"{predictor.path} has no dermoscopy gate; fit one first")
    timing_files = sorted(DERMOSCOPY["ISIC 2018 test"].rglob("*.jpg"))[:256]
    if args.timing_only:
        previous = RESULTS / f"{args.name}.json"
        if not previous.is_file():
            parser.error(f"--timing-only adds to {previous}: run the benchmark first")
        payload = json.loads(previous.read_text())
        payload["cost"] = _cost(predictor, timing_files)
        payload["cost"]["command"] = command()
        _write(args.name, payload)
        return
    real = {name: _score(predictor, _limited(sorted(folder.rglob("*.jpg")), args.limit))
            for name, folder in DERMOSCOPY.items()}
    manifest = pd.read_csv(args.negatives / "manifest.csv")
    manifest = manifest[manifest["split"] == args.split]
    negatives = {}
    for kind in KINDS:
        rows = manifest[manifest["kind"] == kind]
        negatives[kind] = _score(predictor, _limited([Path(p) for p in rows["path"]], args.limit))
    degraded = _degraded(predictor, manifest[manifest["kind"] == "degraded"], args.limit)
    payload = {
        "command": command(), "machine": machine(),
        "model": str(resolve_bundle_path(args.model)), "backend": predictor.backend,
        "gate": {k: predictor.metadata.gate.get(k) for k in (
            "method", "fitted_on", "fit_images", "threshold_images", "quantile", "margin",
            "quality", "contrast_negatives", "contrast_fitted_on", "contrast_margin")},
        "limit": args.limit, "negative_split": args.split,
        "real": real, "negatives": negatives, "degraded": degraded,
    }
    if args.timing:
        payload["cost"] = _cost(predictor, timing_files)
    _write(args.name, payload)


def _write(name: str, payload: dict[str, Any]) -> None:
    path = write_results(name, payload)
    title = "Dermoscopy gate" + ("" if name == "gate" else f" ({name})")
    update_section(name, title, _table(payload))
    print(f"wrote {path}")


def _limited(paths: list[Path], limit: int | None) -> list[Path]:
    return paths[:limit] if limit else paths


def _score(predictor: Predictor, paths: list[Path]) -> dict[str, Any]:
    predictions, skipped = predictor.predict_files(paths)
    n = len(predictions)
    verdicts = [p.gate for p in predictions]
    result = {
        "images": n,
        "skipped": len(skipped),
        "not_dermoscopy": verdicts.count(NOT_DERMOSCOPY) / n if n else None,
        "poor_quality": verdicts.count(POOR_QUALITY) / n if n else None,
        "flagged": sum(p.flagged for p in predictions) / n if n else None,
        "flagged_paths": [p.path for p in predictions if p.flagged][:50],
    }
    print(f"{n} images: {result['flagged']:.1%} flagged" if n else "no image")
    return result


def _degraded(predictor: Predictor, rows: pd.DataFrame, limit: int | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, (meaning, levels) in DEGRADATIONS.items():
        per_level = []
        for level, severity in enumerate(levels, start=1):
            chosen = rows[(rows["degradation"] == name) & (rows["level"] == level)]
            scored = _score(predictor, _limited([Path(p) for p in chosen["path"]], limit))
            per_level.append({"level": level, "severity": severity, **scored})
        starts = next((e["severity"] for e in per_level
                       if e["poor_quality"] is not None and e["poor_quality"] >= TARGET_DEGRADED),
                      None)
        result[name] = {"severity_means": meaning, "levels": per_level,
                        "poor_quality_from": starts}
    return result


def _cost(predictor: Predictor, files: list[Path], rounds: int = 5) -> dict[str, Any]:
    """Seconds per image end to end with the gate, and without it (same network outputs).

    Every file is read once before timing (so that neither side pays for a cold disk cache),
    then the two settings take turns, round after round; the medians are compared.
    """
    gate = predictor.gate
    predictor.predict_files(files)  # warm-up: page cache, onnxruntime's first runs
    timings: dict[str, list[float]] = {"with_gate": [], "without_gate": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(rounds):
            for label, active in (("with_gate", gate), ("without_gate", None)):
                predictor.gate = active
                start = time.perf_counter()
                predictor.predict_files(files)
                timings[label].append((time.perf_counter() - start) / len(files))
    predictor.gate = gate
    result: dict[str, Any] = {label: statistics.median(values)
                              for label, values in timings.items()}
    result["overhead"] = result["with_gate"] / result["without_gate"] - 1
    result["images"] = len(files)
    result["rounds"] = rounds
    return result


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _table(payload: dict[str, Any]) -> str:
    gate = payload["gate"]
    limit = payload["limit"]
    head = (f"Command: `{payload['command']}`  \nModel `{payload['model']}` "
            f"({payload['backend']}); gate `{gate['method']}` fitted on {gate['fitted_on']} "
            f"({gate['fit_images']} fit, {gate['threshold_images']} threshold images, quantile "
            f"{gate['quantile']}, margin {gate['margin']})"
            + (f"; contrast score learnt against {gate['contrast_negatives']} images of "
               f"`{gate['contrast_fitted_on']}` (margin {gate['contrast_margin']})"
               if gate.get("contrast_negatives") else "; no contrast score")
            + f". Negatives scored: the `{payload['negative_split']}` split of "
            "`benchmarks/negatives.py`, never fitted on (the contrast score learns from the "
            "`dev` split only)." + (f" **Subset: at most {limit} images per set or kind.**"
                                    if limit else ""))
    real = "\n".join(
        f"| {name} | {r['images']} | {_pct(r['not_dermoscopy'])} | {_pct(r['poor_quality'])} "
        f"| {'yes' if (r['not_dermoscopy'] or 0) <= TARGET_REAL else 'no'} |"
        for name, r in payload["real"].items())
    negatives = "\n".join(
        f"| {kind} | {r['images']} | {_pct(r['flagged'])} | {_pct(r['not_dermoscopy'])} "
        f"| {_pct(r['poor_quality'])} "
        f"| {'yes' if (r['flagged'] or 0) >= TARGET_NEGATIVE else 'no'} |"
        for kind, r in payload["negatives"].items())
    degraded = "\n".join(
        f"| {name} ({d['severity_means']}) | "
        + " | ".join(f"{e['severity']}: {_pct(e['poor_quality'])} ({_pct(e['flagged'])})"
                     for e in d["levels"])
        + f" | {d['poor_quality_from'] if d['poor_quality_from'] is not None else 'never'} |"
        for name, d in payload["degraded"].items())
    text = (
        f"{head}\n\n"
        "Real dermoscopy wrongly flagged (target: not dermoscopy <= 2% per set):\n\n"
        "| set | images | not dermoscopy | poor quality | target met |\n|---|---|---|---|---|\n"
        f"{real}\n\n"
        "Non-dermoscopy flagged (target >= 95% per kind):\n\n"
        "| kind | images | flagged | not dermoscopy | poor quality | target met |\n"
        f"|---|---|---|---|---|---|\n{negatives}\n\n"
        "Degraded dermoscopy (ISIC 2018 test images): flagged poor quality (any flag) per "
        "severity level; target >= 90% poor quality:\n\n"
        "| degradation | level 1 | level 2 | level 3 | level 4 | level 5 | >= 90% from |\n"
        f"|---|---|---|---|---|---|---|\n{degraded}\n"
    )
    cost = payload.get("cost")
    if cost:
        text += (f"\nCost: {cost['with_gate'] * 1000:.1f} ms per image end to end with the gate, "
                 f"{cost['without_gate'] * 1000:.1f} ms without (same network outputs): "
                 f"{cost['overhead']:+.1%} (target <= 10%), {cost['images']} images, batch 32, "
                 f"median of {cost.get('rounds', 1)} alternating rounds after a warm-up pass"
                 + (f"; measured by `{cost['command']}`" if "command" in cost else "") + ".\n")
    return text


if __name__ == "__main__":
    main()
