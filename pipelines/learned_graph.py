r"""Learned neuron graphs on planted modules: does the graph find structure that is really there?

The reference autoencoder (``gsr_pyg.models.DenseAutoencoder``: dense 128x3, a 100-unit
linear latent, noise 0.5 after it) is trained on planted-module data
(:func:`gsr_pyg.data.planted_modules`) while a graph over its latent neurons is learned from
their co-activations, with the ``reference`` and the ``recommended`` preset side by side
(``pipelines/_graph_learning.py`` defines them). ``--benchmark`` picks the data: ``hub`` (the
default, the reference "hub" data: 3 modules x 5 features, within-module correlation 0.6,
one module switched on by +10 per sample), ``8x5`` (eight such modules) or ``unequal``
(modules of 4, 6, 8, 10, 12 and 15 features with correlations 0.5 down to 0.3, two switched
on by +3 per sample, features shuffled); the data options change any of it. 60,000
training samples.

On held-out samples the features are clustered on their correlation profiles over the
latent neurons, the number of feature modules chosen by the silhouette, and every Louvain
module of the final graph carries one feature module with a sign
(:func:`gsr_pyg.readouts.graph_feature_modules`). The feature modules are compared with the
planted ones (adjusted Rand index, NMI) beside the old reading (every feature joins its
single highest-loading neuron module: ``argmax``) and three baselines from the held-out data
alone (:func:`gsr_pyg.readouts.feature_module_baselines`). Over several seeds, the
results also say how stable the feature modules and the feature graph are.

    python -m pipelines.learned_graph --quick                       # a fast look (~1 min)
    python -m pipelines.learned_graph --seed 0 1 2 3 4              # the 3x5 experiment
    python -m pipelines.learned_graph --benchmark 8x5 --seed 0 1 2 3 4
    python -m pipelines.learned_graph --benchmark unequal --seed 0 1 2 3 4
    torchrun --nproc_per_node=2 -m pipelines.learned_graph --quick  # every process trains

Written to ``--out``: ``results.json`` / ``results.csv`` (one row per preset and seed;
the json also holds the settings, the mean / std over seeds with the stability across
seeds, and what each neuron module of the first seed carries), for the first seed of each
preset ``graph_evolution_<preset>.png``, ``final_graph_<preset>.png`` (neurons coloured by
the planted module they carry: :func:`gsr_pyg.readouts.neuron_planted_modules`),
``correlations_<preset>.png`` (neuron x feature) and ``modules_<preset>.png`` (the mean
correlation of every neuron module with every feature module), ``graph_spectrum.png`` (the
energy of the held-out latent per band of frequencies of each preset's final graph, beside
the same latent with its neurons shuffled), ``graph_<preset>_seed<S>.graphml`` (node
attributes ``neuron_module``, ``planted_module``), ``runs/<preset>_seed<S>/`` (the trainer's
run directory) and ``report.html``. Running the same command again resumes: finished runs
are not trained again. Under torchrun every process trains (the global batch is the number
of processes times the batch size) and rank 0 evaluates and writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from gsr_pyg import graphs, metrics, readouts
from gsr_pyg.data.synthetic import planted_modules
from gsr_pyg.readouts import BASELINE_METHODS
from gsr_pyg.report import write_html_report

from ._cli import (
    non_negative_float,
    number_type,
    option,
    positive_int,
    report_command,
    run_cli,
    run_command,
)
from ._graph_learning import (
    LAYER,
    PRESETS,
    QUICK_SCHEDULE,
    GraphLearningSettings,
    carried_table,
    encode,
    module_analysis,
    override_option,
    preset_settings,
    train_autoencoder,
)
from ._learned_graph_outputs import (
    HEADLINE_METHOD,
    preset_figures,
    report_sections,
    spectrum_figure,
    stability,
    summarize,
)
from ._runtime import device_option, pipeline_run, write_results

LATENT_DIM = 100
NOISE_STD = 0.5
DATA = "data (gsr_pyg.data.planted_modules)"
TRAIN = "training (override both presets)"


_probability = number_type(float, "a number in [0, 1]", lambda value: 0 <= value <= 1)
#: The planted benchmarks (``--benchmark``): the reference "hub" data, eight such modules, and
#: unequal modules with several on at once, a weaker correlation and shuffled features.
BENCHMARKS: dict[str, dict] = {
    "hub": {"modules": [5, 5, 5], "within_corr": [0.6], "shift": 10.0, "noise": 1.0,
            "active_per_sample": 1, "perturb": 0.0, "shuffle_features": False},
    "8x5": {"modules": [5] * 8, "within_corr": [0.6], "shift": 10.0, "noise": 1.0,
            "active_per_sample": 1, "perturb": 0.0, "shuffle_features": False},
    "unequal": {"modules": [4, 6, 8, 10, 12, 15],
                "within_corr": [0.5, 0.46, 0.42, 0.38, 0.34, 0.3], "shift": 3.0,
                "noise": 1.0, "active_per_sample": 2, "perturb": 0.0,
                "shuffle_features": True},
}


@dataclass(frozen=True)
class LearnedGraphSettings(GraphLearningSettings):
    """The full experiment by default; :meth:`quick` is a fast look."""

    prog: ClassVar[str] = "python -m pipelines.learned_graph"
    description: ClassVar[str] = (
        "Learn a graph over the 100 latent neurons of the reference autoencoder trained on "
        "planted-module data, extract feature modules from it and compare them with the "
        "planted ones (reference preset against this library's recommended preset).")
    quick_help: ClassVar[str] = "a fast look: 4,096 samples, 300 warm-up and 300 learning steps"

    benchmark: str = option("hub", "the planted data (default hub: 3 modules x 5 features, "
                                   "correlation 0.6, one module on per sample; 8x5: 8 such "
                                   "modules; unequal: modules of 4-15 features, correlation "
                                   "0.5-0.3, 2 on per sample with shift 3, features shuffled); "
                                   "the options below change it",
                            choices=tuple(BENCHMARKS), group=DATA)
    modules: list[int] | None = option(None, "features per planted module (e.g. 5 5 5)",
                                       type=positive_int, nargs="+", metavar="SIZE",
                                       group=DATA)
    within_corr: list[float] | None = option(
        None, "correlation within a module: one value, or one per module", type=_probability,
        nargs="+", metavar="R", group=DATA)
    shift: float | None = option(None, "added to the features of the active modules",
                                 type=non_negative_float, group=DATA)
    noise: float | None = option(None, "standard deviation of the noise part",
                                 type=non_negative_float, group=DATA)
    active_per_sample: int | None = option(None, "modules switched on in each sample",
                                           type=positive_int, group=DATA)
    perturb: float | None = option(None, "extra shift of a random half of each active module",
                                   type=non_negative_float, group=DATA)
    shuffle_features: bool = option(False, "put the features in a random order (the unequal "
                                           "benchmark always does)", group=DATA)
    samples: int = option(60000, "training samples (default 60000; --quick: 4096)",
                          type=positive_int, group=DATA)
    eval_samples: int = option(16384, "held-out samples for the modules and the MSE (default "
                                      "16384: the correlations behind the feature modules "
                                      "need them; --quick: 2048)",
                               type=positive_int, group=DATA)
    presets: list[str] | None = option(None, "which presets to run (default both)", nargs="+",
                                       choices=tuple(PRESETS), group=TRAIN)
    warmup_steps: int | None = override_option("warmup_steps", TRAIN)
    refresh_every: int | None = override_option("refresh_every", TRAIN)
    learning_steps: int | None = override_option("learning_steps", TRAIN)
    weight: float | None = override_option("weight", TRAIN)
    lr: float | None = override_option("lr", TRAIN)
    batch_size: int | None = override_option("batch_size", TRAIN)
    seed: list[int] = option([0], "one or more seeds (data, model and batch order); with "
                                  "several, results.json holds the mean and std over them "
                                  "(default 0)", type=int, nargs="+")
    device: str | None = device_option()
    out: str = option("runs/learned_graph", "output directory (default runs/learned_graph); "
                                            "finished runs there are not trained again")
    threads: int = option(1, "CPU threads for torch while the pipeline runs (default 1: this "
                             "small model trains several times faster on one thread than on "
                             "two busy cores)", type=positive_int)

    def __post_init__(self) -> None:
        super().__post_init__()
        data = self.data()
        if data["active_per_sample"] > len(data["modules"]):
            raise ValueError(f"--active-per-sample must be at most the number of modules "
                             f"({len(data['modules'])}), got {data['active_per_sample']}")
        if len(data["within_corr"]) not in (1, len(data["modules"])):
            given = "given" if self.within_corr else f"of the {self.benchmark} benchmark"
            raise ValueError(f"--within-corr must be one value or one per module "
                             f"({len(data['modules'])}), got {len(data['within_corr'])} "
                             f"values ({given})")
        if any(seed < 0 for seed in self.seed):
            raise ValueError(f"--seed must be >= 0, got {self.seed}")

    def data(self) -> dict:
        """The planted data: the benchmark's, with what the data options set over it."""
        data = dict(BENCHMARKS[self.benchmark])
        data.update({key: getattr(self, key) for key in data
                     if getattr(self, key) not in (None, False)})
        data["modules"], data["within_corr"] = list(data["modules"]), list(data["within_corr"])
        return data

    @classmethod
    def quick(cls) -> LearnedGraphSettings:
        """A fast look: fewer samples and the short schedule of both presets."""
        return cls(samples=4096, eval_samples=2048, **QUICK_SCHEDULE)


# --------------------------------------------------------------------------- one run
def run_one(preset: str, seed: int, settings: LearnedGraphSettings, device: torch.device,
            out: Path, is_main: bool) -> tuple[dict, dict] | None:
    """Train one preset with one seed; on the main process, its result row and what the
    figures need (None on the other processes under torchrun)."""
    chosen = preset_settings(preset, settings)
    data = settings.data()
    planted = planted_modules(
        num_samples=settings.samples + settings.eval_samples,
        module_sizes=tuple(data["modules"]),
        within_corr=data["within_corr"] if len(data["within_corr"]) > 1
        else data["within_corr"][0],
        active_shift=data["shift"], noise=data["noise"],
        active_per_sample=data["active_per_sample"], perturb=data["perturb"],
        shuffle_features=data["shuffle_features"], seed=seed)
    train_x = planted.data[:settings.samples]
    eval_x, feature_module = planted.data[settings.samples:], planted.feature_module
    config = {"pipeline": "learned_graph", "preset": preset, **data,
              "samples": settings.samples, "batch_size": chosen["batch_size"],
              "lr": chosen["lr"]}
    trained = train_autoencoder(
        train_x, chosen, latent_dim=LATENT_DIM, noise_std=NOISE_STD, seed=seed, device=device,
        run_dir=out / "runs" / f"{preset}_seed{seed}", config=config, quiet=settings.quiet)
    if not is_main:
        return None
    latent, mse = encode(trained.model, eval_x, device)
    graph, num_modules = trained.graph, len(data["modules"])
    found = module_analysis(graph, eval_x, latent, seed=seed)
    neurons, features = found["neurons"], found["features"]
    planted_neurons = readouts.neuron_planted_modules(eval_x, latent, feature_module)
    row = {"preset": preset, "seed": seed, "planted_modules": num_modules,
           "components": metrics.num_components(graph),
           "edges": int(graph.edge_index.shape[1] // 2),
           "graphs_learned": trained.summary["graphs_learned"],
           "stopped": trained.summary["stopped"], "steps": trained.steps,
           "feature_modules": features.num_modules}
    partitions = {"graph": features.assignment, "argmax": found["argmax"],
                  **{m: c.labels for m, c in found["baselines"].items()}}
    for method, labels in partitions.items():
        row[f"ari_{method}"] = metrics.adjusted_rand_index(labels, feature_module)
        row[f"nmi_{method}"] = metrics.normalized_mutual_info(labels, feature_module)
    for method, clustering in found["baselines"].items():
        row[f"modules_{method}"] = clustering.num_clusters
    row["neuron_modules"] = int(neurons.max()) + 1
    row["carrying_modules"] = int((features.carried >= 0).sum())
    row["negative_modules"] = int((features.sign < 0).sum())
    row["modularity"] = metrics.modularity(graph, neurons)
    row["planted_modularity"] = metrics.modularity(graph, planted_neurons)
    snapshots = trained.history.layer_snapshots(LAYER)
    row["edge_jaccard_last"] = (metrics.edge_jaccard(snapshots[-2][1], snapshots[-1][1])
                                if len(snapshots) >= 2 else float("nan"))
    row["mse"] = mse
    row["train_time_s"] = trained.train_time
    graphs.write_graphml(graph, out / f"graph_{preset}_seed{seed}.graphml",
                         {"neuron_module": neurons, "planted_module": planted_neurons},
                         graph_attributes={"preset": preset, "seed": seed,
                                           "module_method": HEADLINE_METHOD})
    # the same feature in every seed (the columns are shuffled per seed): for stability
    order = planted.feature_order
    unshuffled = torch.empty_like(order)
    unshuffled[order] = torch.arange(order.numel())
    detail = {"graph": graph, "history": trained.history, "latent": latent, "inputs": eval_x,
              "feature_module": feature_module, "found": found,
              "planted_neurons": planted_neurons, "unshuffled": unshuffled,
              "carried": carried_table(features, torch.bincount(neurons))}
    return row, detail


# --------------------------------------------------------------------------- the run
def run(settings: LearnedGraphSettings, command: str | None = None) -> Path | None:
    """Train every preset and seed, read out and write results, figures and
    ``report.html`` to ``settings.out``; returns the report's path. ``command`` is the
    command line shown in the report (default: one that gives ``settings``). Under torchrun
    every process trains and the processes other than rank 0 return None."""
    command = report_command(settings, command)
    seeds = list(dict.fromkeys(settings.seed))
    presets = list(dict.fromkeys(settings.presets or PRESETS))
    with pipeline_run(settings.threads, settings.device, settings.out) as (is_main, device, out):
        started = time.perf_counter()
        data = settings.data()
        if is_main:
            print(f"planted modules {data['modules']} (correlation "
                  f"{'/'.join(f'{r:g}' for r in data['within_corr'])}, shift {data['shift']:g}, "
                  f"{data['active_per_sample']} on per sample); {settings.samples} training "
                  f"samples; presets {presets}; seeds {seeds}; device {device}", flush=True)
        rows, figures, first_runs, details = [], {}, {}, {p: {} for p in presets}
        for preset in presets:
            for seed in seeds:
                result = run_one(preset, seed, settings, device, out, is_main)
                if result is None:
                    continue
                row, detail = result
                rows.append(row)
                details[preset][seed] = {key: detail[key] for key in ("found", "unshuffled")}
                print(f"{preset:>11} seed {seed}: {row['components']} components, "
                      f"{row['neuron_modules']} neuron modules carrying "
                      f"{row['feature_modules']} feature modules; ARI graph "
                      f"{row['ari_graph']:.3f} (argmax {row['ari_argmax']:.3f}; baselines "
                      + ", ".join(f"{m} {row[f'ari_{m}']:.3f}" for m in BASELINE_METHODS)
                      + f"); MSE {row['mse']:.4f}; {row['train_time_s']:.1f} s", flush=True)
                if seed == seeds[0]:
                    figures[preset] = preset_figures(preset, detail, out, len(data["modules"]))
                    first_runs[preset] = detail
    if not is_main:
        return None
    summaries = summarize(rows, presets)
    for summary in summaries:
        summary.update(stability(details[summary["preset"]]))
    run_settings = {
        "presets": {p: preset_settings(p, settings) for p in presets},
        "data": {"benchmark": settings.benchmark, **data, "samples": settings.samples,
                 "eval_samples": settings.eval_samples},
        "seeds": seeds, "device": str(device), "headline_method": HEADLINE_METHOD,
        "command": command}
    carried = {preset: first_runs[preset]["carried"] for preset in first_runs}
    write_results(rows, out, {"settings": run_settings, "summary": summaries, "runs": rows,
                              f"neuron_modules_seed{seeds[0]}": carried})
    spectrum = spectrum_figure(first_runs, out, seeds[0])
    report = write_html_report(
        out / "report.html",
        f"Learned neuron graphs on planted modules ({settings.benchmark}: {data['modules']})",
        report_sections(run_settings, rows, summaries, figures, carried, spectrum))
    print(f"done in {time.perf_counter() - started:.1f} s")
    for s in summaries:
        best = max(BASELINE_METHODS, key=lambda m: s[f"ari_{m}_mean"])
        print(f"{s['preset']:>11}: feature-module ARI {s['ari_graph_mean']:.3f} ± "
              f"{s['ari_graph_std']:.3f} over {s['seeds']} seed(s); best baseline {best} "
              f"{s[f'ari_{best}_mean']:.3f}")
    print(f"report: {report.resolve()}")
    return report


def main(argv: Sequence[str] | None = None) -> Path | None:
    """``python -m pipelines.learned_graph [options]``; returns the path of ``report.html``."""
    return run_command(LearnedGraphSettings, run, argv)


if __name__ == "__main__":
    run_cli(main)
