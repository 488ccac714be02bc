"""The ``collapse`` command: the stage commands the DVC graph calls, lineage status, pipeline
upkeep, ablations that change the graph.

Services add ``collapse <modality> …`` sub-commands through :meth:`Modality.add_commands`.
Every failure ends in one message naming what is wrong (exit 2 for bad input, 1 for a
damaged or missing artefact); an unexpected internal error writes its traceback to a log file
and names it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from collapse import layout
from collapse.modality import ConfigError, installed_modalities, load_modality
from collapse.policy import PolicyError
from collapse.store import ArtefactError


def finite_float(low: float | None = None, high: float | None = None, *, above: bool = False
                 ) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] (or (low, high] when ``above``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    return parse


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" + (f" and <= {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


# --- stage commands ---------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from collapse import stages

    stages.check(args.params, args.out, args.root)
    print(f"{args.params}: every value valid, stage graph in sync")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from collapse import stages

    card = stages.prepare(args.params, args.modality, args.config, args.out)
    print(f"{args.modality}: {sum(s.items for s in card.train)} real training items "
          f"(T = {card.initial_items}), {sum(s.items for s in card.test)} test items")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from collapse import stages

    if (args.lineage is None) == (args.modality is None):
        raise ConfigError("give either --lineage (iterations >= 2) or --modality and --seed (iteration 1)")
    stages.fit(args.params, modality=args.modality, lineage_file=args.lineage, seed=args.seed,
               iteration=args.iteration, real_path=args.real, samples=args.samples,
               previous=args.previous, config_file=args.config, manifest_out=args.manifest_out,
               out=args.out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from collapse import stages

    stages.evaluate(args.params, args.model, args.real, args.config, args.out)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from collapse import stages

    stages.generate(args.params, args.lineage, args.iteration, args.model, args.real, args.config,
                    args.out, args.evaluate_config, args.evaluate_out)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from collapse import stages

    for path in stages.figures(args.params, args.modality, args.config, args.out):
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from collapse import stages

    print(stages.report(args.params, args.out))
    return 0


# --- people's commands ------------------------------------------------------------------------


def lineage_status(params: Any, runs: Path) -> list[dict[str, object]]:
    from collapse.contracts import EvalReport
    from collapse.store import read_json

    rows: list[dict[str, object]] = []
    for spec in params.lineages.values():
        evals = [Path(layout.iteration_paths(spec, n, str(runs)).eval) for n in range(1, spec.iterations + 1)]
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
    from collapse.params import load_params

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
    from collapse import pipeline
    from collapse.params import load_params, validate_all

    params = load_params(args.params)
    validate_all(params)
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


def cmd_exp_run(args: argparse.Namespace) -> int:
    """`dvc exp run -S …` for any change, topology included: edit params, regenerate, run."""
    import yaml

    from collapse import pipeline
    from collapse.overrides import apply_overrides
    from collapse.params import parse_params, validate_all
    from collapse.store import atomic_write_bytes

    path = Path(args.params)
    raw = yaml.safe_load(path.read_text()) or {}
    changed = apply_overrides(raw, args.set)
    params = parse_params(changed, str(path))
    validate_all(params)
    atomic_write_bytes(path, yaml.safe_dump(changed, sort_keys=False).encode())
    written = pipeline.write(params, args.root)
    print(f"applied {', '.join(args.set)}; stage graph: {len(written)} files")
    # `dvc repro` + `dvc exp save` records the same experiment as `dvc exp run` would, at repro's
    # cost: `dvc exp run` (DVC 3.67) rebuilds its index of every stage file after each stage to
    # decide what to git-stage, so its cost per stage grows with the number of stages in the lab.
    repro = ["dvc", "repro", *args.dvc_args]
    print("+ " + " ".join(repro), flush=True)
    code = subprocess.run(repro, cwd=args.root, check=False).returncode
    if code != 0:
        print(f"collapse exp run: `{' '.join(repro)}` failed (exit {code}); params.yaml keeps the settings, "
              "no experiment was saved — fix the cause and run `dvc repro`, then `dvc exp save`", file=sys.stderr)
        return code
    listed = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", args.params, "dvc.yaml",
                             "dvc.lock", "pipelines"], cwd=args.root, capture_output=True, text=True, check=False)
    untracked = [a for path in listed.stdout.split() for a in ("-I", path)]
    save = ["dvc", "exp", "save", *(["--name", args.name] if args.name else []), *untracked]
    print(f"+ dvc exp save{f' --name {args.name}' if args.name else ''} (+ {len(untracked) // 2} untracked "
          "stage files)", flush=True)
    return subprocess.run(save, cwd=args.root, check=False).returncode


def cmd_recover(args: argparse.Namespace) -> int:
    from collapse.recover import DvcBusyError, recover

    try:
        damage, aside = recover(Path(args.root))
    except ModuleNotFoundError as error:  # DVC is a lab requirement, not a core one (serving images)
        print(f"collapse recover: reads DVC's files with DVC's own loaders and needs it ({error}): "
              "pip install 'dvc>=3.60,<4'", file=sys.stderr)
        return 2
    except DvcBusyError as error:
        print(f"collapse recover: {error}", file=sys.stderr)
        return 1
    if not damage:
        print("collapse recover: DVC's lock files are intact; nothing to do")
        return 0
    for item in damage:
        print(f"moved aside {item.path.as_posix()}: {item.problem}")
    print(f"collapse recover: {len(damage)} damaged DVC file(s) kept in {aside.as_posix() if aside else ''}; "
          "now run `dvc repro` (it re-runs the stages whose lock entries were lost, same bytes)")
    return 0


# --- parser -----------------------------------------------------------------------------------


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser; a service's own sub-commands are loaded only when ``argv`` names it."""
    parser = argparse.ArgumentParser(prog="collapse", description="collapse-lab: model-collapse experiments")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        sub.add_argument("--params", default=layout.PARAMS, help="the params file")
        return sub

    sub = command("check", cmd_check, "validate params.yaml and the stage graph; write the per-step config files")
    sub.add_argument("--out", default=layout.CONFIG)
    sub.add_argument("--root", default=".", help="project root holding dvc.yaml")

    sub = command("prepare", cmd_prepare, "write a modality's real train pool and test shards")
    sub.add_argument("--modality", required=True, choices=installed_modalities())
    sub.add_argument("--config", help="the resolved step values (written by the check stage)")
    sub.add_argument("--out", required=True)

    sub = command("fit", cmd_fit, "build iteration n's training set from the policy and fit a fresh model")
    sub.add_argument("--lineage", help="a lineage's resolved spec (iterations >= 2)")
    sub.add_argument("--modality", choices=installed_modalities(), help="iteration 1 (with --seed)")
    sub.add_argument("--seed", type=int_at_least(0), help="iteration 1: the lineages' seed")
    sub.add_argument("--iteration", type=int_at_least(1), required=True)
    sub.add_argument("--real", required=True)
    sub.add_argument("--samples", help="model n-1's samples dir")
    sub.add_argument("--previous", help="manifest n-1 (policies that read every earlier shard)")
    sub.add_argument("--config")
    sub.add_argument("--manifest-out", required=True)
    sub.add_argument("--out", required=True)

    sub = command("evaluate", cmd_evaluate, "evaluate a model on the real test data")
    sub.add_argument("--model", required=True)
    sub.add_argument("--real", required=True)
    sub.add_argument("--config")
    sub.add_argument("--out", required=True)

    sub = command("generate", cmd_generate, "sample the items the policy asks model n for (and evaluate it)")
    sub.add_argument("--lineage", required=True)
    sub.add_argument("--iteration", type=int_at_least(1), required=True)
    sub.add_argument("--model", required=True)
    sub.add_argument("--real", required=True)
    sub.add_argument("--config")
    sub.add_argument("--out", required=True)
    sub.add_argument("--evaluate-config", help="also evaluate the loaded model (its resolved step values)")
    sub.add_argument("--evaluate-out", help="also evaluate the loaded model, writing this eval.json")

    sub = command("figures", cmd_figures, "a modality's own report figures")
    sub.add_argument("--modality", required=True, choices=installed_modalities())
    sub.add_argument("--config")
    sub.add_argument("--out", required=True)

    sub = command("report", cmd_report, "the HTML report: curves, samples, lineage provenance")
    sub.add_argument("--out", default=layout.REPORTS)

    sub = command("lineages", cmd_lineages, "list the lineages in params.yaml and their status")
    sub.add_argument("--runs", default=layout.RUNS)
    sub.add_argument("--json", action="store_true")

    sub = command("pipeline", cmd_pipeline, "write or check the DVC stage graph against params.yaml")
    sub.add_argument("action", choices=["write", "check"])
    sub.add_argument("--root", default=".", help="project root holding dvc.yaml")

    sub = commands.add_parser(
        "recover", help="after a killed `dvc repro`: move aside DVC lock files the kill left truncated",
        description="DVC rewrites .dvc/tmp/rwlock and each dvc.lock in place; a kill -9 during that write "
        "leaves them unreadable and `dvc repro` refuses to start. This moves each damaged one to "
        ".dvc/tmp/recovered/ (refusing while a DVC command runs here); a no-op when all are intact.")
    sub.set_defaults(func=cmd_recover)
    sub.add_argument("--root", default=".", help="project root holding dvc.yaml")

    exp = commands.add_parser("exp", help="DVC experiments that may change the stage graph")
    exp_commands = exp.add_subparsers(dest="exp_command", required=True, metavar="COMMAND")
    sub = exp_commands.add_parser(
        "run", help="apply -S key=value like `dvc exp run -S`, regenerate the graph, run and save the experiment",
        description="Edits params.yaml like `dvc exp run -S`, regenerates the stage graph (so topology "
        "changes work: a lineage's seed or iterations, a new lineage), runs `dvc repro` and records the "
        "result with `dvc exp save`. Value changes also work with `dvc exp run -S` directly, whose cost "
        "per stage grows with the number of stages in the lab.")
    sub.set_defaults(func=cmd_exp_run)
    sub.add_argument("--params", default=layout.PARAMS)
    sub.add_argument("--root", default=".")
    sub.add_argument("-S", "--set-param", dest="set", action="append", required=True,
                     metavar="KEY=VALUE", help="[+|++]key=value or ~key, as in dvc exp run -S")
    sub.add_argument("-n", "--name", help="the experiment's name (as in `dvc exp save -n`)")
    sub.add_argument("dvc_args", nargs=argparse.REMAINDER, help="passed on to `dvc repro`")

    for name in installed_modalities():
        sub = commands.add_parser(name, help=f"{name}-specific commands")
        if name in argv:
            load_modality(name).add_commands(sub)
    return parser


def _log_internal_error(command: str) -> Path:
    handle, name = tempfile.mkstemp(prefix=f"collapse-{command}-", suffix=".log")
    with os.fdopen(handle, "w") as log:
        traceback.print_exc(file=log)
    return Path(name)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
    except ConfigError as error:
        print(f"collapse: error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, PolicyError, ValueError) as error:  # services raise ValueError for bad values
        print(f"collapse {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ArtefactError as error:
        print(f"collapse {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        log = _log_internal_error(args.command)
        print(f"collapse {args.command}: internal error ({type(error).__name__}: {error}); "
              f"traceback in {log}", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
