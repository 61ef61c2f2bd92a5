r"""Learned neuron graphs on planted modules: does the graph find structure that is really there?

The reference autoencoder (``gsr_pyg.models.DenseAutoencoder``: dense 128x3, a 100-unit
linear latent, noise 0.5 after it) is trained on planted-module data
(:func:`gsr_pyg.data.planted_modules`; default the reference "hub" data: 3 modules x 5
features, within-module correlation 0.6, one module switched on by +10 per sample, 60,000
samples) while a graph over its latent neurons is learned from their co-activations, with
the ``reference`` and the ``recommended`` preset side by side (``pipelines/_graph_learning.py``
defines them). On held-out samples every input feature then joins the neuron module its
neurons correlate with most, for three cuts of the final graph into modules
(:func:`gsr_pyg.readouts.extract_modules`: ``louvain``, the headline; ``spectral`` with k =
the number of planted modules; the connected ``components``), and the feature modules are
compared with the planted ones (adjusted Rand index, NMI).

    python -m pipelines.learned_graph --quick                       # a fast look (~30 s)
    python -m pipelines.learned_graph --seed 0 1 2 3 4              # the 3x5 experiment
    python -m pipelines.learned_graph --modules 5 5 5 5 5 5 5 5 --seed 0 1 2 3 4
    torchrun --nproc_per_node=2 -m pipelines.learned_graph --quick  # every process trains

Written to ``--out``: ``results.json`` / ``results.csv`` (one row per preset and seed;
the json also holds the settings and the mean / std over seeds), for the first seed of each
preset ``graph_evolution_<preset>.png``, ``final_graph_<preset>.png`` (neurons coloured by
the planted module they carry: :func:`gsr_pyg.readouts.neuron_planted_modules`) and
``correlations_<preset>.png`` (neuron x feature), ``graph_spectrum.png`` (the energy of the
held-out latent per band of frequencies of each preset's final graph, beside the same latent
with its neurons shuffled), ``graph_<preset>_seed<S>.graphml`` (node
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
    MODULE_METHODS,
    PRESETS,
    QUICK_SCHEDULE,
    GraphLearningSettings,
    encode,
    override_option,
    preset_settings,
    train_autoencoder,
)
from ._learned_graph_outputs import (
    HEADLINE_METHOD,
    preset_figures,
    report_sections,
    spectrum_figure,
    summarize,
)
from ._runtime import device_option, pipeline_run, write_results

LATENT_DIM = 100
NOISE_STD = 0.5
DATA = "data (gsr_pyg.data.planted_modules)"
TRAIN = "training (override both presets)"


_probability = number_type(float, "a number in [0, 1]", lambda value: 0 <= value <= 1)


@dataclass(frozen=True)
class LearnedGraphSettings(GraphLearningSettings):
    """The full experiment by default; :meth:`quick` is a fast look."""

    prog: ClassVar[str] = "python -m pipelines.learned_graph"
    description: ClassVar[str] = (
        "Learn a graph over the 100 latent neurons of the reference autoencoder trained on "
        "planted-module data, extract feature modules from it and compare them with the "
        "planted ones (reference preset against this library's recommended preset).")
    quick_help: ClassVar[str] = "a fast look: 4,096 samples, 300 warm-up and 300 learning steps"

    modules: list[int] = option([5, 5, 5], "features per planted module (default 5 5 5; the "
                                           "8-module variant: 5 5 5 5 5 5 5 5)",
                                type=positive_int, nargs="+", metavar="SIZE", group=DATA)
    within_corr: float = option(0.6, "correlation within a module (default 0.6)",
                                type=_probability, group=DATA)
    shift: float = option(10.0, "added to the features of the active module (default 10)",
                          type=non_negative_float, group=DATA)
    noise: float = option(1.0, "standard deviation of the noise part (default 1)",
                          type=non_negative_float, group=DATA)
    active_per_sample: int = option(1, "modules switched on in each sample (default 1)",
                                    type=positive_int, group=DATA)
    perturb: float = option(0.0, "extra shift of a random half of each active module "
                                 "(default 0)", type=non_negative_float, group=DATA)
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
        if self.active_per_sample > len(self.modules):
            raise ValueError(f"--active-per-sample must be at most the number of modules "
                             f"({len(self.modules)}), got {self.active_per_sample}")
        if any(seed < 0 for seed in self.seed):
            raise ValueError(f"--seed must be >= 0, got {self.seed}")

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
    planted = planted_modules(
        num_samples=settings.samples + settings.eval_samples,
        module_sizes=tuple(settings.modules), within_corr=settings.within_corr,
        active_shift=settings.shift, noise=settings.noise,
        active_per_sample=settings.active_per_sample, perturb=settings.perturb, seed=seed)
    train_x = planted.data[:settings.samples]
    eval_x, feature_module = planted.data[settings.samples:], planted.feature_module
    config = {"pipeline": "learned_graph", "preset": preset, "modules": list(settings.modules),
              "within_corr": settings.within_corr, "shift": settings.shift,
              "noise": settings.noise, "active_per_sample": settings.active_per_sample,
              "perturb": settings.perturb, "samples": settings.samples,
              "batch_size": chosen["batch_size"], "lr": chosen["lr"]}
    trained = train_autoencoder(
        train_x, chosen, latent_dim=LATENT_DIM, noise_std=NOISE_STD, seed=seed, device=device,
        run_dir=out / "runs" / f"{preset}_seed{seed}", config=config, quiet=settings.quiet)
    if not is_main:
        return None
    latent, mse = encode(trained.model, eval_x, device)
    graph, num_modules = trained.graph, len(settings.modules)
    found = readouts.extract_modules(graph, eval_x, latent, num_modules, methods=MODULE_METHODS,
                                     seed=seed)
    planted_neurons = readouts.neuron_planted_modules(eval_x, latent, feature_module)
    row = {"preset": preset, "seed": seed, "planted_modules": num_modules,
           "components": metrics.num_components(graph),
           "edges": int(graph.edge_index.shape[1] // 2),
           "graphs_learned": trained.summary["graphs_learned"],
           "stopped": trained.summary["stopped"], "steps": trained.steps}
    for score, measure in (("ari", metrics.adjusted_rand_index),
                           ("nmi", metrics.normalized_mutual_info)):
        for method in MODULE_METHODS:
            row[f"{score}_{method}"] = measure(found[method]["features"], feature_module)
    headline = found[HEADLINE_METHOD]["neurons"]
    row[f"{HEADLINE_METHOD}_modules"] = int(headline.max()) + 1
    row["modularity"] = metrics.modularity(graph, headline)
    row["planted_modularity"] = metrics.modularity(graph, planted_neurons)
    row["mse"] = mse
    row["train_time_s"] = trained.train_time
    graphs.write_graphml(graph, out / f"graph_{preset}_seed{seed}.graphml",
                         {"neuron_module": headline, "planted_module": planted_neurons},
                         graph_attributes={"preset": preset, "seed": seed,
                                           "module_method": HEADLINE_METHOD})
    detail = {"graph": graph, "history": trained.history, "latent": latent, "inputs": eval_x,
              "feature_module": feature_module, "found": found,
              "planted_neurons": planted_neurons}
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
        if is_main:
            print(f"planted modules {settings.modules} (correlation {settings.within_corr:g}, "
                  f"shift {settings.shift:g}); {settings.samples} training samples; presets "
                  f"{presets}; seeds {seeds}; device {device}", flush=True)
        rows, figures, first_runs = [], {}, {}
        for preset in presets:
            for seed in seeds:
                result = run_one(preset, seed, settings, device, out, is_main)
                if result is None:
                    continue
                row, detail = result
                rows.append(row)
                print(f"{preset:>11} seed {seed}: {row['components']} components, ARI "
                      + ", ".join(f"{m} {row[f'ari_{m}']:.3f}" for m in MODULE_METHODS)
                      + f"; MSE {row['mse']:.4f}; {row['train_time_s']:.1f} s", flush=True)
                if seed == seeds[0]:
                    figures[preset] = preset_figures(preset, detail, out, len(settings.modules))
                    first_runs[preset] = detail
    if not is_main:
        return None
    summaries = summarize(rows, presets)
    run_settings = {
        "presets": {p: preset_settings(p, settings) for p in presets},
        "data": {"modules": list(settings.modules), "within_corr": settings.within_corr,
                 "shift": settings.shift, "noise": settings.noise,
                 "active_per_sample": settings.active_per_sample, "perturb": settings.perturb,
                 "samples": settings.samples, "eval_samples": settings.eval_samples},
        "seeds": seeds, "device": str(device), "headline_method": HEADLINE_METHOD,
        "command": command}
    write_results(rows, out, {"settings": run_settings, "summary": summaries, "runs": rows})
    spectrum = spectrum_figure(first_runs, out, seeds[0])
    report = write_html_report(
        out / "report.html", f"Learned neuron graphs on planted modules {settings.modules}",
        report_sections(settings, run_settings, rows, summaries, figures, spectrum))
    print(f"done in {time.perf_counter() - started:.1f} s")
    for s in summaries:
        print(f"{s['preset']:>11}: feature-module ARI ({HEADLINE_METHOD}) "
              f"{s[f'ari_{HEADLINE_METHOD}_mean']:.3f} ± {s[f'ari_{HEADLINE_METHOD}_std']:.3f} "
              f"over {s['seeds']} seed(s)")
    print(f"report: {report.resolve()}")
    return report


def main(argv: Sequence[str] | None = None) -> Path | None:
    """``python -m pipelines.learned_graph [options]``; returns the path of ``report.html``."""
    return run_command(LearnedGraphSettings, run, argv)


if __name__ == "__main__":
    run_cli(main)
