"""Run replace and accumulate lineages of the vae modality directly (no DVC), and print the
per-iteration metrics: the check that a scale shows the collapse effect before it goes into
the pipeline.

    python services/vae/scripts/run_lineages.py --scale default --iterations 5 --out /tmp/vae-run

Iteration 1 is fitted once and shared by both lineages (same seed), as in the pipeline; the
shards, manifests, models and eval.json files follow the pipeline's layout under ``--out``.
Timings are printed and written to ``timings.json`` (never inside the artefacts).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from collapse.contracts import DatasetManifest, EvalReport, LineageSpec, RealDataCard, ShardRef
from collapse.modality import IterationView, LineageView, load_modality
from collapse.policy import build_manifest, first_manifest, items_to_generate
from collapse.store import read_json, read_model, sha256_file, write_json, write_model_card


def _fit(service, config, manifest: DatasetManifest, real: RealDataCard, folder: Path, seed: int) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "manifest.json", manifest)
    model_dir = folder / "model"
    model_dir.mkdir(exist_ok=True)
    started = time.perf_counter()
    summary = service.fit(config, manifest, real, model_dir, seed)
    took = time.perf_counter() - started
    write_model_card(model_dir, summary, modality=service.name, lineage=manifest.lineage,
                     iteration=manifest.iteration, manifest_sha256=sha256_file(folder / "manifest.json"),
                     train_items=manifest.items, seed=seed)
    return took


def _evaluate(service, config, real: RealDataCard, folder: Path) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    card = read_model(folder / "model")
    generator = service.load(config, folder / "model", card, real)
    metrics = service.evaluate(config, generator, real)
    report = EvalReport(modality=service.name, lineage=card.lineage, iteration=card.iteration,
                        metrics=metrics, model_card_sha256=sha256_file(folder / "model" / "card.json"),
                        test_shards=[s.sha256 for s in real.test])
    write_json(folder / "eval.json", report)
    return metrics, time.perf_counter() - started


def _generate(service, config, real: RealDataCard, folder: Path, spec: LineageSpec, n: int,
              out: Path) -> tuple[ShardRef, float]:
    started = time.perf_counter()
    card = read_model(folder / "model")
    generator = service.load(config, folder / "model", card, real)
    count = items_to_generate(spec.policy, n, real.initial_items)
    chunk = generator.chunk_items
    chunks = (generator.sample(s, min(count, s + chunk), spec.seed) for s in range(0, count, chunk))
    out.mkdir(parents=True, exist_ok=True)
    ref = generator.write(chunks, out, n)
    return ref, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="default")
    parser.add_argument("--overrides", default="{}", help="JSON overrides of the preset")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--policies", nargs="+", default=["replace", "accumulate"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reuse-real", action="store_true", help="keep an existing out/real")
    parser.add_argument("--no-report", action="store_true", help="skip the report figures (out/report)")
    args = parser.parse_args()

    service = load_modality("vae")
    config = service.config(args.scale, json.loads(args.overrides))
    service.validate(config)
    out: Path = args.out
    timings: dict[str, float] = {}
    real_dir = out / "real"
    if args.reuse_real and (real_dir / "real.json").is_file():
        real = read_json(real_dir / "real.json", RealDataCard)
    else:
        started = time.perf_counter()
        real = service.prepare(config, real_dir, args.data_seed)
        write_json(real_dir / "real.json", real)
        timings["prepare"] = time.perf_counter() - started
        print(f"prepare: {timings['prepare']:.1f} s")
    t = real.initial_items

    first = out / "first" / f"seed_{args.seed}"
    fit_total = eval_total = gen_total = 0.0
    took = _fit(service, config, first_manifest(service.name, args.seed, real.train, t), real, first, args.seed)
    fit_total += took
    timings["fit 1"] = took
    metrics_1, took_eval = _evaluate(service, config, real, first)
    eval_total += took_eval
    print(f"iteration 1 (shared): fit {timings['fit 1']:.1f} s, evaluate {took_eval:.1f} s: {metrics_1}")
    results: dict[str, list[dict[str, float]]] = {}
    for policy in args.policies:
        spec = LineageSpec(name=f"vae-{policy}", modality=service.name, policy=policy, seed=args.seed,
                           iterations=args.iterations)
        rows = [{"iteration": 1, **metrics_1}]
        previous = first
        synthetic: list[ShardRef] = []
        for n in range(2, args.iterations + 1):
            folder = out / spec.name / f"iter_{n}"
            ref, took_gen = _generate(service, config, real, previous, spec, n - 1,
                                      folder.parent / f"iter_{n - 1}" / "samples")
            gen_total += took_gen
            synthetic.append(ref)
            manifest = build_manifest(spec, n, real.train, synthetic, t)
            took = _fit(service, config, manifest, real, folder, args.seed)
            fit_total += took
            timings[f"fit {spec.name} {n}"] = took
            metrics, took_eval = _evaluate(service, config, real, folder)
            eval_total += took_eval
            rows.append({"iteration": n, **metrics})
            print(f"{spec.name} iteration {n}: {manifest.items} items {manifest.provenance()}, fit "
                  f"{took:.1f} s, generate {took_gen:.1f} s, evaluate {took_eval:.1f} s: {metrics}", flush=True)
            previous = folder
        results[spec.name] = rows
    timings |= {"fit total": fit_total, "evaluate total": eval_total, "generate total": gen_total,
                "all but prepare": fit_total + eval_total + gen_total}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")

    keys = ("test_neg_elbo", "test_recon", "test_kl", "class_entropy", "top_class_share", "frechet")
    print(f"\n{'lineage':<16} {'n':>2} " + " ".join(f"{k:>15}" for k in keys))
    for name, rows in results.items():
        for row in rows:
            print(f"{name:<16} {int(row['iteration']):>2} " + " ".join(f"{row[k]:>15.4f}" for k in keys))
    for name, rows in results.items():
        first_row, last = rows[0], rows[-1]
        print(f"{name}: class_entropy {last['class_entropy'] / first_row['class_entropy']:.1%} of "
              f"iteration 1's; test_neg_elbo {last['test_neg_elbo'] - first_row['test_neg_elbo']:+.2f} nats")
    if not args.no_report:
        views = []
        for name in results:
            policy = name.removeprefix("vae-")
            iterations = [IterationView(1, first / "manifest.json", first / "model", first / "eval.json", None)]
            for n in range(2, args.iterations + 1):
                folder = out / name / f"iter_{n}"
                iterations.append(IterationView(n, folder / "manifest.json", folder / "model",
                                                folder / "eval.json", folder / "samples"))
            views.append(LineageView(name, policy, args.seed, iterations))
        blocks = service.report_blocks(config, views, out / "report")
        print("report figures:", ", ".join(str(image) for block in blocks for image in block.images))
    print(f"fit {fit_total:.0f} s + evaluate {eval_total:.0f} s + generate {gen_total:.0f} s = "
          f"{fit_total + eval_total + gen_total:.0f} s (prepare excluded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
