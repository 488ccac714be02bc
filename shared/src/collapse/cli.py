"""The ``collapse`` command: the stage commands dvc.yaml calls, lineage status, pipeline upkeep.

Services add ``collapse <modality> …`` sub-commands through :meth:`Modality.add_commands`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from collapse import pipeline
from collapse.contracts import DatasetManifest, EvalReport, RealDataCard
from collapse.modality import ConfigError, installed_modalities, load_modality
from collapse.params import LabParams, load_params
from collapse.policy import PolicyError, build_manifest, items_to_generate
from collapse.store import (
    ArtefactError,
    read_json,
    read_model,
    read_shard_ref,
    sha256_file,
    write_json,
    write_model_card,
)


def _fresh_dir(path: Path) -> Path:
    """An empty output directory (a stage's outputs are re-made whole, never patched)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _real(path: str) -> RealDataCard:
    return read_json(Path(path) / "real.json", RealDataCard)


def cmd_prepare(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    service = load_modality(args.modality)
    section = params.modality(args.modality)
    config = service.config(section.scale, section.config)
    if args.pool_items < service.real_items(config):
        raise ConfigError(
            f"--pool-items {args.pool_items} is smaller than T = {service.real_items(config)}"
        )
    out = _fresh_dir(Path(args.out))
    card = service.prepare(config, out, args.pool_items, section.data_seed)
    write_json(out / "real.json", card)
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    lineage = load_params(args.params).lineage(args.lineage)
    real = _real(args.real)
    synthetic = [read_shard_ref(directory) for directory in args.samples]
    manifest = build_manifest(lineage, args.iteration, real.train, synthetic, real.initial_items)
    write_json(args.out, manifest)
    print(f"{lineage.name} iteration {args.iteration}: {manifest.items} items, by producer "
          f"{manifest.provenance()}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    lineage = params.lineage(args.lineage)
    service = load_modality(lineage.modality)
    manifest = read_json(args.manifest, DatasetManifest)
    out = _fresh_dir(Path(args.out))
    summary = service.fit(
        params.config(lineage.modality, service), manifest, _real(args.real), out, lineage.seed
    )
    write_model_card(  # last: a model dir without card.json is incomplete
        out, summary, modality=lineage.modality, lineage=lineage.name,
        iteration=manifest.iteration, manifest_sha256=sha256_file(args.manifest),
        train_items=manifest.items, seed=lineage.seed,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    lineage = params.lineage(args.lineage)
    service = load_modality(lineage.modality)
    real = _real(args.real)
    card, weights = read_model(args.model)
    metrics = service.evaluate(params.config(lineage.modality, service), Path(args.model), real)
    report = EvalReport(
        modality=lineage.modality,
        lineage=lineage.name,
        iteration=card.iteration,
        metrics=metrics,
        model_weights_sha256=sha256_file(weights),
        test_shards=[shard.sha256 for shard in real.test],
    )
    write_json(args.out, report)
    print(f"{lineage.name} iteration {card.iteration}: " + ", ".join(
        f"{name}={value:.6g}" for name, value in metrics.items()))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    lineage = params.lineage(args.lineage)
    service = load_modality(lineage.modality)
    real = _real(args.real)
    card, _ = read_model(args.model)
    if card.iteration != args.iteration:
        raise ArtefactError(f"{args.model} holds model {card.iteration}, not {args.iteration}")
    items = items_to_generate(lineage.policy, args.iteration, real.initial_items)
    out = _fresh_dir(Path(args.out))
    service.generate(
        params.config(lineage.modality, service), Path(args.model), real, items, out,
        args.iteration, lineage.seed,
    )
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    service = load_modality(args.modality)
    out = _fresh_dir(Path(args.out))
    for path in service.figures(params.config(args.modality, service), out):
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from collapse.report import write_report

    params = load_params(args.params)
    problem = pipeline.out_of_sync(params, args.root)
    if problem:
        raise ConfigError(problem)
    print(write_report(params, Path(args.runs), Path(args.out)))
    return 0


def lineage_status(params: LabParams, runs: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for spec in params.lineages.values():
        evals = [
            Path(pipeline.iteration_dir(spec, n, str(runs))) / "eval.json"
            for n in range(1, spec.iterations + 1)
        ]
        done = [path for path in evals if path.is_file()]
        last = read_json(done[-1], EvalReport).metrics if done else {}
        status = "done" if len(done) == spec.iterations else ("partial" if done else "not run")
        rows.append({
            "lineage": spec.name, "modality": spec.modality, "policy": spec.policy.name,
            "seed": spec.seed, "iterations": spec.iterations, "evaluated": len(done),
            "status": status, "last_metrics": last,
        })
    return rows


def cmd_lineages(args: argparse.Namespace) -> int:
    rows = lineage_status(load_params(args.params), Path(args.runs))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'lineage':28} {'modality':8} {'policy':22} {'seed':>4} {'done':>7}  status   last")
    for row in rows:
        metrics = row["last_metrics"]
        assert isinstance(metrics, dict)
        last = ", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:2])
        print(f"{row['lineage']:28} {row['modality']:8} {row['policy']:22} {row['seed']:>4} "
              f"{row['evaluated']:>3}/{row['iterations']:<3}  {row['status']:8} {last}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    if args.action == "write":
        for path in pipeline.write(params, args.root):
            print(f"wrote {path}")
        return 0
    problem = pipeline.out_of_sync(params, args.root)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print(f"the DVC pipeline is in sync with {args.params}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser; a service's own sub-commands are loaded only when ``argv`` names it."""
    parser = argparse.ArgumentParser(
        prog="collapse", description="collapse-lab: model-collapse experiments"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        sub.add_argument("--params", default=pipeline.PARAMS, help="the params file")
        return sub

    sub = command("prepare", cmd_prepare, "write a modality's real train pool and test shards")
    sub.add_argument("--modality", required=True, choices=installed_modalities())
    sub.add_argument("--pool-items", type=_positive, required=True)
    sub.add_argument("--out", required=True)

    sub = command("manifest", cmd_manifest, "build iteration n's training set from the policy")
    sub.add_argument("--lineage", required=True)
    sub.add_argument("--iteration", type=_positive, required=True)
    sub.add_argument("--real", required=True)
    sub.add_argument("--samples", action="append", default=[], help="a samples dir (repeat)")
    sub.add_argument("--out", required=True)

    sub = command("fit", cmd_fit, "fit a fresh model to a manifest")
    sub.add_argument("--lineage", required=True)
    sub.add_argument("--manifest", required=True)
    sub.add_argument("--real", required=True)
    sub.add_argument("--out", required=True)

    sub = command("evaluate", cmd_evaluate, "evaluate a model on the real test data")
    sub.add_argument("--lineage", required=True)
    sub.add_argument("--model", required=True)
    sub.add_argument("--real", required=True)
    sub.add_argument("--out", required=True)

    sub = command("generate", cmd_generate, "sample the items the policy asks model n for")
    sub.add_argument("--lineage", required=True)
    sub.add_argument("--iteration", type=_positive, required=True)
    sub.add_argument("--model", required=True)
    sub.add_argument("--real", required=True)
    sub.add_argument("--out", required=True)

    sub = command("figures", cmd_figures, "a modality's own report figures")
    sub.add_argument("--modality", required=True, choices=installed_modalities())
    sub.add_argument("--out", required=True)

    sub = command("report", cmd_report, "per-lineage curves, PNG figures and an HTML index")
    sub.add_argument("--runs", default="runs")
    sub.add_argument("--out", default="reports")
    sub.add_argument("--root", default=".", help="project root holding dvc.yaml")

    sub = command("lineages", cmd_lineages, "list the lineages in params.yaml and their status")
    sub.add_argument("--runs", default="runs")
    sub.add_argument("--json", action="store_true")

    sub = command("pipeline", cmd_pipeline, "write or check dvc.yaml against params.yaml")
    sub.add_argument("action", choices=["write", "check"])
    sub.add_argument("--root", default=".", help="project root holding dvc.yaml")

    for name in installed_modalities():
        sub = commands.add_parser(name, help=f"{name}-specific commands")
        if name in argv:
            load_modality(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, PolicyError, ValueError) as error:  # services raise ValueError for bad values
        print(f"collapse {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ArtefactError as error:
        print(f"collapse {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
