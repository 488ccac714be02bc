"""What each DVC stage does (the ``collapse <step>`` commands run these).

Every stage reads its full config from params.yaml and first checks that the values its step
reads equal the resolved file it depends on in DVC (``runs/config/<m>/<step>.json``, written by
the check stage), so DVC's view of a stage's inputs is never out of date. Each artefact is
verified once when it is opened.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from collapse import layout
from collapse.contracts import DatasetManifest, EvalReport, LineageSpec, RealDataCard
from collapse.modality import ConfigError, Generator, Modality, load_modality
from collapse.params import LabParams, load_params, validate_all
from collapse.policy import build_manifest, first_manifest, items_to_generate
from collapse.store import (
    ArtefactError,
    file_mode,
    read_json,
    read_model,
    read_shard_ref,
    sha256_file,
    umask,
    write_json,
    write_model_card,
    write_plain_json,
)


def clean_scratch(path: Path) -> None:
    """Remove what a killed earlier run of a stage may have left beside its output ``path``:
    temporary files of atomic writes (``.<name>.*.tmp``) and scratch folders (``.<name>-*``)."""
    if not path.parent.is_dir():
        return
    for scratch in [*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{path.name}-*")]:
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            scratch.unlink(missing_ok=True)


def fresh_dir(path: Path) -> Path:
    """An empty output directory (a stage's outputs are re-made whole, never patched)."""
    if path.exists():
        shutil.rmtree(path)
    clean_scratch(path)
    path.mkdir(parents=True)
    return path


def read_real(path: str | Path) -> RealDataCard:
    return read_json(Path(path) / "real.json", RealDataCard)


def _step_record(service: Modality, config: Any, step: str, params: LabParams) -> dict[str, Any]:
    values = service.step_values(config, step)
    if step == "prepare":
        values = {"data_seed": params.modality(service.name).data_seed, **values}
    return {"modality": service.name, "step": step, "values": values}


def _resolved(params_path: str, modality: str, step: str, config_file: str | None) -> tuple[Modality, Any]:
    """(service, config) of ``modality``; the step's values must match ``config_file``."""
    params = load_params(params_path)
    service = load_modality(modality)
    config = params.config(modality, service)
    if config_file is not None:
        wanted = json.loads(json.dumps(_step_record(service, config, step, params)))
        file = Path(config_file)
        found = json.loads(file.read_text()) if file.is_file() else None
        if found != wanted:
            raise ConfigError(
                f"{config_file} does not hold the {step} values of {params_path} (params changed "
                "since the check stage ran): run `dvc repro`, which runs the check stage first"
            )
    return service, config


# --- check ----------------------------------------------------------------------------------


def check(params_path: str, out: str, root: str = ".") -> list[str]:
    """Validate every value, refuse a stale graph, write the per-step and per-lineage files."""
    from collapse import pipeline

    params = load_params(params_path)
    configs = validate_all(params)
    problem = pipeline.out_of_sync(params, root)
    if problem:
        raise ConfigError(problem)
    base = Path(out)
    written = []
    write_plain_json(base / Path(layout.TOPOLOGY).name, pipeline.topology(params))
    for m in params.active_modalities():
        service = load_modality(m)
        for step in pipeline.steps_of(service):
            path = base / m / f"{step}.json"
            clean_scratch(path)
            write_plain_json(path, _step_record(service, configs[m], step, params))
            written.append(path.as_posix())
    for name, spec in params.lineages.items():
        path = base / "lineages" / f"{name}.json"
        write_plain_json(path, spec.model_dump(mode="json", exclude={"iterations"}))
        written.append(path.as_posix())
    return written


# --- real data, fit, evaluate, generate -------------------------------------------------------


def prepare(params_path: str, modality: str, config_file: str | None, out: str) -> RealDataCard:
    service, config = _resolved(params_path, modality, "prepare", config_file)
    data_seed = load_params(params_path).modality(modality).data_seed
    target = fresh_dir(Path(out))
    card = service.prepare(config, target, data_seed)
    if Path(card.root) != target:
        raise ArtefactError(f"{modality}.prepare wrote a card whose root is {card.root}, not {out}")
    write_json(target / "real.json", card)
    return card


def read_lineage(path: str) -> LineageSpec:
    """A lineage's resolved spec as the check stage wrote it (without ``iterations``: a longer
    lineage re-runs none of the iterations it already has)."""
    file = Path(path)
    if not file.is_file():
        raise ArtefactError(f"{file} does not exist: run `dvc repro` (the check stage writes it)")
    return LineageSpec.model_validate({**json.loads(file.read_text()), "iterations": 1})


def fit(
    params_path: str,
    *,
    modality: str | None,
    lineage_file: str | None,
    seed: int | None,
    iteration: int,
    real_path: str,
    samples: str | None,
    previous: str | None,
    config_file: str | None,
    manifest_out: str,
    out: str,
) -> DatasetManifest:
    """Build iteration n's manifest from the policy, then fit a fresh model to it."""
    real = read_real(real_path)
    if lineage_file is not None:
        spec = read_lineage(lineage_file)
        synthetic = []
        if previous is not None:
            synthetic += read_json(previous, DatasetManifest).synthetic_pool
        if samples is not None:
            synthetic.append(read_shard_ref(samples))
        manifest = build_manifest(spec, iteration, real.train, synthetic, real.initial_items)
        modality, seed = spec.modality, spec.seed
    else:
        if modality is None or seed is None or iteration != 1:
            raise ConfigError("without --lineage, give --modality and --seed for iteration 1")
        manifest = first_manifest(modality, seed, real.train, real.initial_items)
    service, config = _resolved(params_path, modality, "fit", config_file)
    clean_scratch(Path(manifest_out))
    write_json(manifest_out, manifest)
    print(f"{manifest.lineage or f'{modality} seed {seed}'} iteration {iteration}: {manifest.items} "
          f"items, by producer {manifest.provenance()}")
    target = fresh_dir(Path(out))
    started = time.perf_counter()
    summary = service.fit(config, manifest, real, target, seed)
    print(f"fit took {time.perf_counter() - started:.1f} s")  # timings are printed, never stored
    for path in [target, *target.rglob("*")]:  # libraries may write 0600/0700: keep it readable to others
        os.chmod(path, 0o777 & ~umask() if path.is_dir() else file_mode())
    write_model_card(  # last: a model dir without card.json is incomplete
        target, summary, modality=modality, lineage=manifest.lineage, iteration=iteration,
        manifest_sha256=sha256_file(manifest_out), train_items=manifest.items, seed=seed,
    )
    return manifest


def open_generator(params_path: str, model_dir: str, real_path: str, step: str,
                   config_file: str | None) -> tuple[Modality, Any, Generator]:
    """Verify the model folder once, then load it through the service's generator API."""
    card = read_model(model_dir)
    service, config = _resolved(params_path, card.modality, step, config_file)
    return service, config, service.load(config, Path(model_dir), card, read_real(real_path))


def _evaluate_loaded(service: Modality, config: Any, generator: Generator, real: RealDataCard, model_dir: str,
                     out: str) -> EvalReport:
    metrics = service.evaluate(config, generator, real)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise ArtefactError(f"{service.name} evaluate returned non-finite {', '.join(bad)} for {model_dir}")
    card = generator.card
    report = EvalReport(
        modality=card.modality, lineage=card.lineage, iteration=card.iteration, metrics=metrics,
        model_card_sha256=sha256_file(Path(model_dir) / "card.json"),
        test_shards=[shard.sha256 for shard in real.test],
    )
    clean_scratch(Path(out))
    write_json(out, report)
    print(f"{card.lineage or 'shared'} iteration {card.iteration}: "
          + ", ".join(f"{name}={value:.6g}" for name, value in metrics.items()))
    return report


def evaluate(params_path: str, model_dir: str, real_path: str, config_file: str | None,
             out: str) -> EvalReport:
    service, config, generator = open_generator(params_path, model_dir, real_path, "evaluate",
                                                config_file)
    return _evaluate_loaded(service, config, generator, read_real(real_path), model_dir, out)


CHUNK_ITEMS = 4096  # items per sample call: bounds memory, shows progress


def _chunks(generator: Generator, total: int, seed: int, label: str) -> Iterator[Any]:
    chunk = max(1, getattr(generator, "chunk_items", CHUNK_ITEMS))
    with tqdm(total=total, desc=label, unit="item", disable=total <= chunk) as bar:
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            yield generator.sample(start, stop, seed)
            bar.update(stop - start)


def generate(params_path: str, lineage_file: str, iteration: int, model_dir: str, real_path: str,
             config_file: str | None, out: str, evaluate_config: str | None = None,
             evaluate_out: str | None = None) -> None:
    """Load model n once; optionally score it on real test data (``evaluate_out``); sample the
    items the policy asks for and write them as one shard."""
    spec = read_lineage(lineage_file)
    service, config, generator = open_generator(params_path, model_dir, real_path, "generate", config_file)
    if generator.card.iteration != iteration:
        raise ArtefactError(f"{model_dir} holds model {generator.card.iteration}, not {iteration}")
    real = read_real(real_path)
    if evaluate_out is not None:
        _resolved(params_path, service.name, "evaluate", evaluate_config)  # its values are this stage's deps too
        _evaluate_loaded(service, config, generator, real, model_dir, evaluate_out)
    count = items_to_generate(spec.policy, iteration, real.initial_items)
    target = fresh_dir(Path(out))
    ref = generator.write(_chunks(generator, count, spec.seed, f"generate {spec.name} {iteration}"),
                          target, iteration)
    print(f"{spec.name} model {iteration}: wrote {ref.items} items to {ref.path}")


def figures(params_path: str, modality: str, config_file: str | None, out: str) -> list[Path]:
    service, config = _resolved(params_path, modality, "figures", config_file)
    return service.figures(config, fresh_dir(Path(out)))


def report(params_path: str, out: str) -> Path:
    from collapse.report import write_report

    params = load_params(params_path)
    return write_report(params, Path(layout.RUNS), Path(out), Path(params_path))
