"""``collapse linreg …``: the batched simulator from the command line."""

from __future__ import annotations

import argparse
import json

import numpy as np

from collapse.cli import finite_float, int_at_least
from collapse.contracts import REGIMES
from collapse.modality import ConfigError
from collapse_linreg.config import PRESETS, LinregConfig
from collapse_linreg.simulate import simulate
from collapse_linreg.theory import expected_error


def cmd_simulate(args: argparse.Namespace) -> int:
    overrides = {
        "dim": args.dim, "samples": args.samples, "sigma": args.sigma, "ridge": args.ridge,
        "cov_decay": args.cov_decay, "fresh_design": args.fresh_design,
    }
    try:
        config = LinregConfig.model_validate({**PRESETS["default"], **overrides})
    except ValueError as error:
        raise ConfigError(str(error)) from None
    policy = REGIMES[args.regime]
    seeds = [args.seed + k for k in range(args.seeds)]
    result = simulate(config, policy, args.iterations, seeds, progress=not args.json)
    analytic = expected_error(policy, args.iterations, args.dim, args.samples, args.sigma,
                              args.ridge, args.fresh_design)
    payload = {
        "iterations": list(range(1, args.iterations + 1)),
        "mean": result.mean.tolist(),
        "sem": result.sem.tolist(),
        "analytic": analytic,
    }
    if not all(np.isfinite(result.mean)) or not all(np.isfinite(result.sem)):
        raise ConfigError(
            "the simulated test errors overflowed (not finite): lower --sigma or --iterations, or raise --samples"
        )
    if args.json:
        print(json.dumps(payload, allow_nan=False))
        return 0
    print(f"{'n':>4} {'mean':>12} {'sem':>12} {'analytic':>12}")
    for i, n in enumerate(payload["iterations"]):
        theory = f"{analytic[i]:12.6g}" if analytic else f"{'—':>12}"
        print(f"{n:>4} {result.mean[i]:12.6g} {result.sem[i]:12.6g} {theory}")
    return 0


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="linreg_command", required=True, metavar="COMMAND")
    sub = commands.add_parser(
        "simulate",
        help="many seeds of one regime with the sufficient-statistics simulator",
        description="Mean/SEM over seeds of ‖ŵ_n − w*‖²_Σ, with the closed form where known.",
    )
    sub.add_argument("--regime", required=True, choices=list(REGIMES))
    sub.add_argument("--dim", type=int_at_least(1, 10_000), required=True, help="d")
    sub.add_argument("--samples", type=int_at_least(1, 10_000_000), required=True, help="T (>= d+2 for OLS)")
    sub.add_argument("--sigma", type=finite_float(0, 1e6, above=True), required=True,
                     help="noise standard deviation σ in (0, 1e6]")
    sub.add_argument("--iterations", type=int_at_least(1, 100_000), required=True)
    sub.add_argument("--seeds", type=int_at_least(2, 100_000), required=True,
                     help="replicates (>= 2, for the SEM)")
    sub.add_argument("--ridge", type=finite_float(0, 1e12), default=0.0, help="λ >= 0 (0 = OLS)")
    sub.add_argument("--cov-decay", type=finite_float(0, 1, above=True), default=1.0,
                     help="C in (0, 1]: Σ = diag(C^0, …, C^(d-1)); 1 = isotropic")
    sub.add_argument("--seed", type=int_at_least(0), default=0, help="first replicate's seed")
    sub.add_argument("--fresh-design", action="store_true", help="new x for every generation")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.set_defaults(func=cmd_simulate)

