r"""Learned neuron graphs on planted modules: does the graph find structure that is really there?

The reference model (``gsr_pyg.models.DenseAutoencoder``: dense 128x3 encoder, a 100-unit
linear latent, Gaussian noise 0.5 after it, mirrored decoder) is trained on planted-module
data (:func:`gsr_pyg.data.planted_modules`; default the reference "hub" data: 3 modules x 5
features, within-module correlation 0.6, one module switched on by +10 per sample, 60,000
samples) while a graph over its 100 latent neurons is learned from their co-activations
(:class:`gsr_pyg.pipeline.GSRTrainer`). Two presets run side by side:

* ``reference``: the original method. 5,000 warm-up steps, then a kNN graph (k=5,
  euclidean) from the current batch of 32 every 100 steps, stop at the first graph that falls
  apart (>= 2 connected components), 200 more steps on the last connected graph.
* ``recommended``: this library's defaults. 2,000 warm-up steps, then a graph every 64 steps
  from the correlation of the latent neurons over the 64 x 32 = 2,048 samples seen since the
  previous graph (``CoactivationGraph.recommended()``: kNN, k=5), no early stop, 2,000
  learning steps.

Both: Adam 1e-3, batch 32, penalty weight 1e-3 with the normalized Laplacian.

After training, on held-out samples, every input feature joins the neuron module its neurons
correlate with most (:func:`gsr_pyg.metrics.feature_modules`), for three ways of cutting the
final neuron graph into modules (:func:`gsr_pyg.metrics.neuron_modules`): ``louvain`` (the
headline: needs no k), ``spectral`` with k = the number of planted modules, and the connected
``components``. The extracted feature modules are compared with the planted ones (adjusted
Rand index, NMI).

    python -m pipelines.learned_graph --quick                       # a fast look (~30 s)
    python -m pipelines.learned_graph --seed 0 1 2 3 4              # the 3x5 experiment
    python -m pipelines.learned_graph --modules 5 5 5 5 5 5 5 5 --seed 0 1 2 3 4

Written to ``--out``::

    results.json / results.csv      one row per preset and seed; results.json also holds the
                                    settings and the mean / std over seeds per preset
    graph_evolution_<preset>.png    the learned graph over training (first seed), neurons
                                    coloured by the planted module they carry
    final_graph_<preset>.png        the final graph coloured by planted module
    correlations_<preset>.png       neuron x feature correlations, neurons ordered by
                                    neuron module, features by planted module
    graph_<preset>_seed<S>.graphml  the final neuron graph (node attributes: neuron_module,
                                    planted_module)
    runs/<preset>_seed<S>/          the trainer's run directory (config, metrics, the graph
                                    snapshots as .pt and .graphml, checkpoint)
    report.html                     settings, tables and figures in one offline file

A neuron's *planted module* is the planted module whose features it correlates with most
(mean absolute correlation), which is how the figures colour neurons. Running the same
command again resumes: finished runs are not trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch_geometric.data import Data

from gsr_pyg import graphs, metrics, plotting
from gsr_pyg.data.synthetic import planted_modules
from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.models import DenseAutoencoder
from gsr_pyg.pipeline import GSRTrainer, LearningSchedule
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.report import write_html_report

from ._common import (
    add_config_argument,
    fit_timed,
    make_out_dir,
    non_negative_float,
    parse_arguments,
    positive_int,
    resolve_device,
    run_cli,
    torch_threads,
    write_file,
    write_results,
    write_text,
)

__all__ = [
    "PRESETS",
    "QUICK_PRESETS",
    "QUICK_DATA",
    "MODULE_METHODS",
    "build_parser",
    "add_training_arguments",
    "build_learning",
    "extract_modules",
    "label_module_colorbar",
    "module_colormap",
    "neuron_planted_modules",
    "write_graphml",
    "main",
]

#: The two presets. ``learner`` names a ``CoactivationGraph`` constructor.
PRESETS: dict[str, dict] = {
    "reference": {"warmup_steps": 5000, "refresh_every": 100, "max_learning_steps": 5000,
                  "after_stop_steps": 200, "stop": "disconnected", "learner": "reference",
                  "batch_size": 32, "lr": 1e-3, "weight": 1e-3},
    "recommended": {"warmup_steps": 2000, "refresh_every": 64, "max_learning_steps": 2000,
                    "after_stop_steps": 0, "stop": "never", "learner": "recommended",
                    "batch_size": 32, "lr": 1e-3, "weight": 1e-3},
}
#: ``--quick``: the same presets, scaled down (explicit options still win).
QUICK_PRESETS: dict[str, dict] = {
    "reference": {"warmup_steps": 300, "refresh_every": 50, "max_learning_steps": 300,
                  "after_stop_steps": 50},
    "recommended": {"warmup_steps": 300, "refresh_every": 50, "max_learning_steps": 300},
}
#: ``--quick`` data size (explicit ``--samples`` wins).
QUICK_DATA = {"samples": 4096, "eval_samples": 2048}
MODULE_METHODS = ("louvain", "spectral", "components")
HEADLINE_METHOD = "louvain"
LATENT_DIM = 100
LAYER = "latent"
SUMMARY_FIELDS = ("components", "mse", "train_time_s", "modularity",
                  *(f"ari_{m}" for m in MODULE_METHODS), *(f"nmi_{m}" for m in MODULE_METHODS))


# --------------------------------------------------------------------------- arguments
def _probability(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_training_arguments(group) -> None:
    """Options that override a preset's schedule and optimiser (shared with single_cell)."""
    group.add_argument("--warmup-steps", type=int, default=None)
    group.add_argument("--refresh-every", type=positive_int, default=None)
    group.add_argument("--learning-steps", type=positive_int, default=None,
                       help="at most this many learning steps")
    group.add_argument("--weight", type=non_negative_float, default=None,
                       help="penalty weight (default 1e-3)")
    group.add_argument("--lr", type=non_negative_float, default=None,
                       help="Adam learning rate (default 1e-3)")
    group.add_argument("--batch-size", type=positive_int, default=None,
                       help="batch size (default 32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.learned_graph",
        description="Learn a graph over the 100 latent neurons of the reference autoencoder "
                    "trained on planted-module data, extract feature modules from it and "
                    "compare them with the planted ones (reference preset against this "
                    "library's recommended preset).",
    )
    data = parser.add_argument_group("data (gsr_pyg.data.planted_modules)")
    data.add_argument("--modules", type=positive_int, nargs="+", default=[5, 5, 5],
                      metavar="SIZE", help="features per planted module (default 5 5 5; the "
                                           "8-module variant: 5 5 5 5 5 5 5 5)")
    data.add_argument("--within-corr", type=_probability, default=0.6,
                      help="correlation within a module (default 0.6)")
    data.add_argument("--shift", type=non_negative_float, default=10.0,
                      help="added to the features of the active module (default 10)")
    data.add_argument("--noise", type=non_negative_float, default=1.0,
                      help="standard deviation of the noise part (default 1)")
    data.add_argument("--active-per-sample", type=positive_int, default=1,
                      help="modules switched on in each sample (default 1)")
    data.add_argument("--perturb", type=non_negative_float, default=0.0,
                      help="extra shift of a random half of each active module (default 0)")
    data.add_argument("--samples", type=positive_int, default=None,
                      help="training samples (default 60000; --quick: 4096)")
    data.add_argument("--eval-samples", type=positive_int, default=None,
                      help="held-out samples for the modules and the MSE (default 16384: "
                           "the correlations behind the feature modules need them; "
                           "--quick: 2048)")
    train = parser.add_argument_group("training (override both presets)")
    train.add_argument("--presets", nargs="+", choices=tuple(PRESETS), default=None,
                       help="which presets to run (default both)")
    add_training_arguments(train)
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="one or more seeds (data, model and batch order); with several, "
                             "results.json holds the mean and std over them (default 0)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    parser.add_argument("--out", default="runs/learned_graph",
                        help="output directory (default runs/learned_graph); finished runs "
                             "there are not trained again")
    parser.add_argument("--quick", action="store_true",
                        help="a fast look: 4,096 samples, 300 warm-up and 300 learning steps")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch while the pipeline runs (default 1: this "
                             "small model trains several times faster on one thread than on "
                             "two busy cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_argument(parser)
    return parser


def _preset_settings(name: str, args: argparse.Namespace) -> dict:
    """The preset, then --quick, then explicit options."""
    settings = dict(PRESETS[name])
    if args.quick:
        settings.update(QUICK_PRESETS[name])
    explicit = {"warmup_steps": args.warmup_steps, "refresh_every": args.refresh_every,
                "max_learning_steps": args.learning_steps, "weight": args.weight,
                "lr": args.lr, "batch_size": args.batch_size}
    settings.update({key: value for key, value in explicit.items() if value is not None})
    if settings["warmup_steps"] < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {settings['warmup_steps']}")
    return settings


def build_learning(settings: dict) -> tuple[LearningSchedule, CoactivationGraph]:
    """The schedule and graph learner of a preset's settings."""
    schedule = LearningSchedule(
        warmup_steps=settings["warmup_steps"], refresh_every=settings["refresh_every"],
        max_learning_steps=settings["max_learning_steps"],
        after_stop_steps=settings["after_stop_steps"], stop=settings["stop"],
        normalization="sym")
    learner = getattr(CoactivationGraph, settings["learner"])()
    return schedule, learner


# --------------------------------------------------------------------------- analysis
def extract_modules(graph: Data, inputs: torch.Tensor, latent: torch.Tensor,
                    num_modules: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Neuron modules of ``graph`` and the feature modules they give, for every method.

    Returns ``{method: {"neurons": [N] labels, "features": [F] labels}}`` for the methods of
    :data:`MODULE_METHODS`; ``spectral`` uses ``k = num_modules`` (at most the number of
    neurons).
    """
    out = {}
    for method in MODULE_METHODS:
        k = min(num_modules, graph.num_nodes) if method == "spectral" else None
        neurons = metrics.neuron_modules(graph, method, k=k, seed=seed)
        features = metrics.feature_modules(inputs, latent, neurons)
        out[method] = {"neurons": neurons, "features": features}
    return out


def neuron_planted_modules(inputs: torch.Tensor, latent: torch.Tensor,
                           feature_module: torch.Tensor) -> torch.Tensor:
    """The planted module each neuron carries: the module whose features it correlates with
    most (mean absolute Pearson correlation over the samples)."""
    corr = metrics.feature_correlations(inputs, latent).abs()  # [N, F]
    modules = int(feature_module.max()) + 1
    index = feature_module.to(corr.device)
    sums = corr.new_zeros(corr.size(0), modules).index_add_(1, index, corr)
    counts = torch.bincount(index, minlength=modules).to(corr.dtype)
    return (sums / counts).argmax(dim=1)


def write_graphml(graph: Data, path: Path, node_attributes: dict[str, Sequence] | None = None,
                  graph_attributes: dict | None = None) -> Path:
    """``graph`` as GraphML (networkx-readable, opens in Cytoscape / Gephi), with extra node
    attributes (one value per node) and graph attributes; written atomically."""
    import networkx as nx

    nx_graph = graphs.to_networkx(Data(edge_index=graph.edge_index.cpu(),
                                       edge_weight=graph.edge_weight.cpu(),
                                       num_nodes=graph.num_nodes))
    for node, attrs in nx_graph.nodes(data=True):
        attrs.pop("pos", None)  # GraphML cannot store tuples
        for key, values in (node_attributes or {}).items():
            value = values[node]
            attrs[key] = value.item() if hasattr(value, "item") else value
    for key, value in (graph_attributes or {}).items():
        nx_graph.graph[key] = value
    return write_file(path, lambda tmp: nx.write_graphml(nx_graph, tmp))


# --------------------------------------------------------------------------- one run
def _make_data(args: argparse.Namespace, seed: int, samples: int, eval_samples: int):
    planted = planted_modules(
        num_samples=samples + eval_samples, module_sizes=tuple(args.modules),
        within_corr=args.within_corr, active_shift=args.shift, noise=args.noise,
        active_per_sample=args.active_per_sample, perturb=args.perturb, seed=seed)
    return planted.data[:samples], planted.data[samples:], planted.feature_module


@torch.no_grad()
def _evaluate(model: DenseAutoencoder, inputs: torch.Tensor, device: torch.device):
    model.eval()
    x = inputs.to(device)
    latent = model.encode(x)
    mse = float(F.mse_loss(model.decode(latent), x))
    return latent, mse


def run_one(preset: str, seed: int, args: argparse.Namespace, device: torch.device,
            out: Path, samples: int, eval_samples: int) -> dict:
    """Train one preset with one seed; returns its result row and what the figures need."""
    settings = _preset_settings(preset, args)
    train_x, eval_x, feature_module = _make_data(args, seed, samples, eval_samples)
    torch.manual_seed(seed)
    model = DenseAutoencoder(train_x.shape[1], hidden=(128, 128, 128), latent_dim=LATENT_DIM,
                             noise_std=0.5)
    reg = GraphSpectralRegularizer(model, {LAYER: LATENT_DIM}, weight=settings["weight"])
    schedule, learner = build_learning(settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    loader = DataLoader(TensorDataset(train_x), batch_size=settings["batch_size"], shuffle=True)
    run_dir = out / "runs" / f"{preset}_seed{seed}"
    trainer = GSRTrainer(
        model, reg, optimizer, F.mse_loss, schedule=schedule, learn={LAYER: learner},
        run_dir=run_dir, checkpoint_every=1000, log_every=100, smoothness_permutations=0,
        seed=seed, device=device, verbose=not args.quiet,
        config={"pipeline": "learned_graph", "preset": preset, "modules": list(args.modules),
                "within_corr": args.within_corr, "shift": args.shift, "noise": args.noise,
                "active_per_sample": args.active_per_sample, "perturb": args.perturb,
                "samples": samples, "batch_size": settings["batch_size"],
                "lr": settings["lr"]})
    train_time = fit_timed(trainer, loader, run_dir)
    graph = reg.graph(LAYER).cpu()
    reg.detach()
    latent, mse = _evaluate(model, eval_x, device)
    latent = latent.cpu()
    num_modules = len(args.modules)
    found = extract_modules(graph, eval_x, latent, num_modules, seed=seed)
    planted_neurons = neuron_planted_modules(eval_x, latent, feature_module)
    summary = trainer.summary()[LAYER]
    row = {"preset": preset, "seed": seed, "planted_modules": num_modules,
           "components": metrics.num_components(graph),
           "edges": int(graph.edge_index.shape[1] // 2),
           "graphs_learned": summary["graphs_learned"], "stopped": summary["stopped"],
           "steps": trainer.step}
    for method in MODULE_METHODS:
        row[f"ari_{method}"] = metrics.adjusted_rand_index(found[method]["features"],
                                                           feature_module)
    for method in MODULE_METHODS:
        row[f"nmi_{method}"] = metrics.normalized_mutual_info(found[method]["features"],
                                                              feature_module)
    row[f"{HEADLINE_METHOD}_modules"] = int(found[HEADLINE_METHOD]["neurons"].max()) + 1
    row["modularity"] = metrics.modularity(graph, found[HEADLINE_METHOD]["neurons"])
    row["planted_modularity"] = metrics.modularity(graph, planted_neurons)
    row["mse"] = mse
    row["train_time_s"] = train_time
    write_graphml(graph, out / f"graph_{preset}_seed{seed}.graphml",
                  {"neuron_module": found[HEADLINE_METHOD]["neurons"].tolist(),
                   "planted_module": planted_neurons.tolist()},
                  {"preset": preset, "seed": seed, "module_method": HEADLINE_METHOD})
    detail = {"graph": graph, "history": trainer.history, "latent": latent, "inputs": eval_x,
              "feature_module": feature_module, "found": found,
              "planted_neurons": planted_neurons}
    return row, detail


# --------------------------------------------------------------------------- figures
def module_colormap(num_modules: int):
    """The categorical palette of ``gsr_pyg.plotting`` as a colour map of ``num_modules``
    colours, so the graph evolution uses the same colours as the final graph's legend."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    count = max(num_modules, 1)
    if count <= 20:
        base = colormaps["tab10" if count <= 10 else "tab20"]
        return ListedColormap([base(index) for index in range(count)])
    return ListedColormap([colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, count)])


def label_module_colorbar(fig, num_modules: int, prefix: str = "planted") -> None:
    """Name the colours of the figure's colour bar (its last axes; one band per module, as
    drawn with :func:`module_colormap`) instead of a numeric scale."""
    colorbar_axes = fig.axes[-1]
    span = max(num_modules - 1, 1)
    centres = [(index + 0.5) * span / num_modules for index in range(num_modules)]
    colorbar_axes.set_yticks(centres, [f"{prefix} {index}" for index in range(num_modules)])
    colorbar_axes.minorticks_off()


def _figures(preset: str, detail: dict, out: Path, num_modules: int) -> list[Path]:
    graph, history = detail["graph"], detail["history"]
    planted_neurons = detail["planted_neurons"]
    names = [f"planted {m}" for m in range(num_modules)]
    layout = plotting.spring_layout(graph)
    paths = []
    snapshots = history.layer_snapshots(LAYER)
    if snapshots:
        path = out / f"graph_evolution_{preset}.png"
        fig = plotting.plot_graph_evolution(
            snapshots, layouts=layout, signal=planted_neurons.float(),
            cmap=module_colormap(num_modules), colorbar_label="planted module of the neuron")
        label_module_colorbar(fig, num_modules)
        plotting.save_figure(fig, path)
        paths.append(path)
    path = out / f"final_graph_{preset}.png"
    plotting.plot_graph(graph, planted_neurons, pos=layout, categorical=True, class_names=names,
                        title=f"{preset}: final graph", path=path)
    paths.append(path)
    corr = metrics.feature_correlations(detail["inputs"], detail["latent"])
    features = detail["feature_module"]
    path = out / f"correlations_{preset}.png"
    plotting.plot_heatmap(
        corr, row_groups=detail["found"][HEADLINE_METHOD]["neurons"],
        col_labels=[f"f{i} (m{int(m)})" for i, m in enumerate(features)], col_groups=features,
        title=f"{preset}: neuron x feature correlation",
        ylabel=f"neurons, by {HEADLINE_METHOD} module", xlabel="features (planted module)",
        colorbar_label="Pearson r", path=path)
    paths.append(path)
    return paths


def _summaries(rows: list[dict], presets: Sequence[str]) -> list[dict]:
    out = []
    for preset in presets:
        chosen = [row for row in rows if row["preset"] == preset]
        summary = {"preset": preset, "seeds": len(chosen)}
        for field in SUMMARY_FIELDS:
            values = np.array([float(row[field]) for row in chosen])
            summary[f"{field}_mean"] = float(np.nanmean(values))
            summary[f"{field}_std"] = float(np.nanstd(values)) if len(values) > 1 else 0.0
        out.append(summary)
    return out


# --------------------------------------------------------------------------- main
def _check_arguments(args: argparse.Namespace) -> None:
    if args.active_per_sample > len(args.modules):
        raise ValueError(f"--active-per-sample must be at most the number of modules "
                         f"({len(args.modules)}), got {args.active_per_sample}")
    if any(seed < 0 for seed in args.seed):
        raise ValueError(f"--seed must be >= 0, got {args.seed}")


def main(argv: list[str] | None = None) -> Path:
    """Run the pipeline; returns the path of ``report.html``."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_arguments(build_parser(), argv, check=_check_arguments)
    seeds = list(dict.fromkeys(args.seed))
    presets = list(dict.fromkeys(args.presets or PRESETS))
    samples = args.samples or (QUICK_DATA["samples"] if args.quick else 60000)
    eval_samples = args.eval_samples or (QUICK_DATA["eval_samples"] if args.quick else 16384)
    device = resolve_device(args.device)
    with torch_threads(args.threads):
        return _run(args, argv, seeds, presets, samples, eval_samples, device)


def _run(args: argparse.Namespace, argv: list[str], seeds: list[int], presets: list[str],
         samples: int, eval_samples: int, device: torch.device) -> Path:
    out = make_out_dir(args.out)
    started = time.perf_counter()
    num_modules = len(args.modules)
    print(f"planted modules {args.modules} (correlation {args.within_corr:g}, shift "
          f"{args.shift:g}); {samples} training samples; presets {presets}; seeds {seeds}; "
          f"device {device}", flush=True)

    rows, figures = [], {}
    for preset in presets:
        for seed in seeds:
            row, detail = run_one(preset, seed, args, device, out, samples, eval_samples)
            rows.append(row)
            print(f"{preset:>11} seed {seed}: {row['components']} components, ARI "
                  + ", ".join(f"{m} {row[f'ari_{m}']:.3f}" for m in MODULE_METHODS)
                  + f"; MSE {row['mse']:.4f}; {row['train_time_s']:.1f} s", flush=True)
            if seed == seeds[0]:
                figures[preset] = _figures(preset, detail, out, num_modules)

    summaries = _summaries(rows, presets)
    settings = {"presets": {p: _preset_settings(p, args) for p in presets},
                "data": {"modules": list(args.modules), "within_corr": args.within_corr,
                         "shift": args.shift, "noise": args.noise,
                         "active_per_sample": args.active_per_sample, "perturb": args.perturb,
                         "samples": samples, "eval_samples": eval_samples},
                "seeds": seeds, "device": str(device), "headline_method": HEADLINE_METHOD,
                "command": " ".join(["python -m pipelines.learned_graph", *argv])}
    write_results(rows, out)  # results.csv (and a plain results.json, replaced below)
    write_text(out / "results.json", json.dumps(
        {"settings": settings, "summary": summaries, "runs": rows}, indent=2,
        default=_json_default) + "\n")

    table = [{"preset": s["preset"], "seeds": s["seeds"],
              **{f"ARI {m}": f"{s[f'ari_{m}_mean']:.3f} ± {s[f'ari_{m}_std']:.3f}"
                 for m in MODULE_METHODS},
              "components": f"{s['components_mean']:.1f}", "MSE": s["mse_mean"],
              "time (s)": s["train_time_s_mean"]} for s in summaries]
    run_table = [{key: row[key] for key in ("preset", "seed", "components", "edges",
                                            "graphs_learned", "ari_louvain", "ari_spectral",
                                            "ari_components", "nmi_louvain", "modularity",
                                            "planted_modularity", "mse", "train_time_s")}
                 for row in rows]
    sections = [
        ("Settings", [
            f"Planted modules {args.modules}: within-module correlation {args.within_corr:g}, "
            f"shift {args.shift:g}, noise {args.noise:g}, {args.active_per_sample} active per "
            f"sample, perturbation {args.perturb:g}; {samples} training and {eval_samples} "
            f"held-out samples. Seeds {seeds}; device {device}.",
            [{"preset": p, **{k: str(v) for k, v in s.items()}}
             for p, s in settings["presets"].items()],
            "Feature modules: every feature joins the neuron module whose neurons it "
            "correlates with most (mean |r| on the held-out samples). Neuron modules: louvain "
            f"(headline), spectral clustering with k = {num_modules}, connected components. "
            "ARI / NMI against the planted feature modules; modularity of the louvain "
            "modules and of the neurons grouped by the planted module they carry.",
            "Command: " + settings["command"],
        ]),
        ("Summary (mean ± std over seeds)", [table]),
        ("Runs", [run_table]),
    ]
    for preset in presets:
        sections.append((f"Figures: {preset} (seed {seeds[0]})", list(figures[preset])))
    report = write_html_report(out / "report.html",
                               f"Learned neuron graphs on planted modules {args.modules}",
                               sections)
    print(f"done in {time.perf_counter() - started:.1f} s")
    for s in summaries:
        print(f"{s['preset']:>11}: feature-module ARI ({HEADLINE_METHOD}) "
              f"{s[f'ari_{HEADLINE_METHOD}_mean']:.3f} ± {s[f'ari_{HEADLINE_METHOD}_std']:.3f} "
              f"over {s['seeds']} seed(s)")
    print(f"report: {report.resolve()}")
    return report


def _json_default(value):
    if isinstance(value, (np.floating, np.integer, torch.Tensor)):
        return value.tolist()
    return repr(value)


if __name__ == "__main__":
    run_cli(main)
