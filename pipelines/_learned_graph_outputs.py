"""The figures, tables and report of ``pipelines.learned_graph``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from gsr_pyg import metrics, plotting
from gsr_pyg.readouts import BASELINE_METHODS

from ._graph_learning import graph_evolution_figure

HEADLINE_METHOD = "louvain"
#: Equal bands of the learned graph's spectrum [0, 2] in the spectrum figure.
SPECTRUM_BANDS = 20
#: Random orders of the neurons behind the "neurons shuffled" line of the spectrum figure.
SPECTRUM_SHUFFLES = 10
#: The feature modules compared with the planted ones: the learned graph's
#: (:func:`gsr_pyg.readouts.graph_feature_modules`), every feature joining its single
#: highest-loading neuron module (``argmax``, what this pipeline reported before) and the
#: baselines from the data alone.
PARTITIONS = ("graph", "argmax", *BASELINE_METHODS)
SUMMARY_FIELDS = ("components", "neuron_modules", "feature_modules", "carrying_modules",
                  "negative_modules", "mse", "train_time_s", "modularity",
                  "edge_jaccard_last", *(f"ari_{m}" for m in PARTITIONS),
                  *(f"nmi_{m}" for m in PARTITIONS),
                  *(f"modules_{m}" for m in BASELINE_METHODS))


def preset_figures(preset: str, detail: dict, out: Path, num_modules: int) -> list[Path]:
    """The graph over training, the final graph (neurons coloured by the planted module
    they carry) and the neuron x feature correlations of one run."""
    graph, planted_neurons = detail["graph"], detail["planted_neurons"]
    layout = plotting.spring_layout(graph)
    evolution = graph_evolution_figure(
        detail["history"], layout, planted_neurons, num_modules,
        "planted module of the neuron", "planted", out / f"graph_evolution_{preset}.png")
    paths = [evolution] if evolution is not None else []
    path = out / f"final_graph_{preset}.png"
    plotting.plot_graph(graph, planted_neurons, pos=layout, categorical=True,
                        class_names=[f"planted {m}" for m in range(num_modules)],
                        title=f"{preset}: final graph", path=path)
    paths.append(path)
    found = detail["found"]
    features, neurons = found["features"], found["neurons"]
    # neuron modules side by side when they carry the same feature module: "F<k><sign>
    # n<module>" sorts by feature module, then neuron module
    row = torch.searchsorted(features.neuron_modules, neurons)
    width = len(str(max(features.num_modules, int(neurons.max()) + 1)))
    sign = {1: "+", -1: "-", 0: ""}
    groups = [(f"F{int(c):0{width}d}{sign[int(s)]}" if c >= 0 else "none") + f" n{int(m):0{width}d}"
              for c, s, m in zip(features.carried[row], features.sign[row], neurons)]
    planted = detail["feature_module"]
    path = out / f"correlations_{preset}.png"
    plotting.plot_heatmap(
        found["correlations"], row_groups=groups,
        col_labels=[f"f{i} (p{int(m)})" for i, m in enumerate(planted)],
        col_groups=features.assignment,
        title=f"{preset}: neuron x feature correlation",
        ylabel="neuron modules, by the feature module they carry",
        xlabel="features (planted module p), by learned feature module",
        colorbar_label="Pearson r", path=path)
    paths.append(path)
    path = out / f"modules_{preset}.png"
    plotting.plot_heatmap(
        features.signature,
        row_labels=[f"n{int(m)} ({int(c)})" for m, c in
                    zip(features.neuron_modules, torch.bincount(neurons))],
        col_labels=[f"F{k} ({int(n)})" for k, n in
                    enumerate(torch.bincount(features.assignment))],
        row_order=torch.argsort(features.carried * 1000 + features.neuron_modules),
        title=f"{preset}: neuron modules x feature modules",
        xlabel="feature module (features)", ylabel="neuron module (neurons)",
        colorbar_label="mean r", path=path)
    paths.append(path)
    return paths


def spectrum_figure(details: dict[str, dict], out: Path, seed: int) -> Path:
    """``graph_spectrum.png``: the energy of the held-out latent, centred (each neuron's mean
    removed), per band of frequencies of each preset's final graph (its normalized
    Laplacian, the one it trained with), beside the same latent with its neurons in a
    random order (the mean over :data:`SPECTRUM_SHUFFLES` orders, drawn from ``seed``):
    what the spectrum looks like when the graph knows nothing of the neurons."""
    spectra = {}
    for preset, detail in details.items():
        graph, latent = detail["graph"], detail["latent"]
        centred = latent - latent.mean(dim=0)
        spectrum = metrics.graph_fourier_energy(centred, graph, "sym", bands=SPECTRUM_BANDS)
        generator = torch.Generator().manual_seed(seed)
        shuffled = [metrics.graph_fourier_energy(
            centred[:, torch.randperm(centred.shape[1], generator=generator)], graph, "sym",
            bands=SPECTRUM_BANDS).energy for _ in range(SPECTRUM_SHUFFLES)]
        spectra[preset] = spectrum
        spectra[f"{preset}, neurons shuffled"] = spectrum._replace(
            energy=torch.stack(shuffled).mean(dim=0))
    path = out / "graph_spectrum.png"
    plotting.plot_graph_spectrum(
        spectra, xlabel="frequency of the learned graph (eigenvalue of I - D^-1/2 A D^-1/2)",
        suptitle="Energy of the centred latent on the learned graph",
        path=path)
    return path


def stability(details: dict[int, dict]) -> dict:
    """How much the feature modules and the feature graph change across seeds: over every
    pair of seeds, the mean ARI between their feature modules (learned and each baseline)
    and the mean Jaccard index of their feature-graph edges. Each seed draws its own data
    (and its own column order): features are matched by their place in the unshuffled data.
    The neurons of two seeds are different models' neurons, so their graphs are compared
    through the features they link, not neuron by neuron."""
    seeds = sorted(details)
    pairs = list(itertools.combinations(seeds, 2))
    if not pairs:
        return {"seed_pairs": 0}

    def unshuffled(detail: dict, labels: torch.Tensor) -> torch.Tensor:
        return labels[detail["unshuffled"]]

    partitions = {"graph": lambda d: d["found"]["features"].assignment,
                  **{m: (lambda d, m=m: d["found"]["baselines"][m].labels)
                     for m in BASELINE_METHODS}}
    out = {"seed_pairs": len(pairs)}
    for method, labels_of in partitions.items():
        out[f"ari_between_seeds_{method}"] = float(np.mean([
            metrics.adjusted_rand_index(unshuffled(details[a], labels_of(details[a])),
                                        unshuffled(details[b], labels_of(details[b])))
            for a, b in pairs]))

    def feature_graph(detail: dict) -> Data:
        graph, order = detail["found"]["feature_graph"], detail["unshuffled"]
        position = torch.empty_like(order)
        position[order] = torch.arange(order.numel())  # column -> unshuffled feature
        return Data(edge_index=position[graph.edge_index], num_nodes=graph.num_nodes)

    out["feature_graph_jaccard"] = float(np.mean([
        metrics.edge_jaccard(feature_graph(details[a]), feature_graph(details[b]))
        for a, b in pairs]))
    return out


def summarize(rows: list[dict], presets: Sequence[str]) -> list[dict]:
    """Mean and standard deviation over the seeds of every preset (std 0 for one seed)."""
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


def _mean_std(summary: dict, field: str) -> str:
    return f"{summary[f'{field}_mean']:.3f} ± {summary[f'{field}_std']:.3f}"


def report_sections(run_settings: dict, rows: list[dict], summaries: list[dict],
                    figures: dict[str, list[Path]], carried: dict[str, list[dict]],
                    spectrum: Path | None = None) -> list[tuple]:
    """The sections of ``report.html``: settings, feature-module recovery beside the
    baselines, stability across seeds, what each neuron module carries, every run, the
    figures of the first seed and the spectrum figure (:func:`spectrum_figure`)."""
    data, seeds = run_settings["data"], run_settings["seeds"]
    table = [{"preset": s["preset"], "seeds": s["seeds"],
              "ARI learned graph": _mean_std(s, "ari_graph"),
              "NMI learned graph": _mean_std(s, "nmi_graph"),
              "ARI argmax": _mean_std(s, "ari_argmax"),
              **{f"ARI {m}": _mean_std(s, f"ari_{m}") for m in BASELINE_METHODS},
              "feature modules": f"{s['feature_modules_mean']:.1f}",
              "neuron modules": f"{s['neuron_modules_mean']:.1f}",
              "MSE (held out)": s["mse_mean"], "time (s)": s["train_time_s_mean"]}
             for s in summaries]
    stable = [{"preset": s["preset"], "seed pairs": s["seed_pairs"],
               **({"ARI between seeds, learned graph": s["ari_between_seeds_graph"],
                   **{f"ARI between seeds, {m}": s[f"ari_between_seeds_{m}"]
                      for m in BASELINE_METHODS},
                   "feature-graph Jaccard": s["feature_graph_jaccard"]}
                  if s["seed_pairs"] else {}),
               "last-refresh edge Jaccard": _mean_std(s, "edge_jaccard_last")}
              for s in summaries]
    run_table = [{key: row[key] for key in (
        "preset", "seed", "components", "edges", "neuron_modules", "feature_modules",
        "carrying_modules", "negative_modules", "ari_graph", "ari_argmax",
        *(f"ari_{m}" for m in BASELINE_METHODS), "nmi_graph", "modularity",
        "planted_modularity", "edge_jaccard_last", "mse", "train_time_s")} for row in rows]
    sections = [
        ("Settings", [
            f"Benchmark {data['benchmark']}: planted modules {data['modules']}, within-module "
            f"correlation {'/'.join(f'{r:g}' for r in data['within_corr'])}, shift "
            f"{data['shift']:g}, noise {data['noise']:g}, {data['active_per_sample']} active "
            f"per sample, perturbation {data['perturb']:g}, features "
            f"{'shuffled' if data['shuffle_features'] else 'in module order'}; "
            f"{data['samples']} training and {data['eval_samples']} held-out samples. Seeds "
            f"{seeds}; device {run_settings['device']}.",
            [{"preset": p, **{k: str(v) for k, v in s.items()}}
             for p, s in run_settings["presets"].items()],
            "Feature modules of the learned graph (gsr_pyg.readouts.graph_feature_modules): "
            "every feature's profile of correlations with the 100 latent neurons on the "
            "held-out samples; features clustered by average linkage on 1 - cosine of their "
            "profiles, the number of modules the cut with the highest mean silhouette. Each "
            "Louvain module of the learned graph then carries the feature module its neurons "
            "correlate with most, with a sign. 'argmax': every feature joins its single "
            "highest-loading Louvain module (neuron modules with the same signature split a "
            "module). Baselines from the held-out data alone "
            "(gsr_pyg.readouts.feature_module_baselines): Louvain on the feature-feature "
            "|correlation| graph (louvain_corr), average linkage of 1 - |correlation| with "
            "the same silhouette rule (average_corr), k-means of the PCA loadings (Kaiser "
            "components, k by the silhouette; kmeans_pca). ARI / NMI against the planted "
            "modules.",
            "Command: " + run_settings["command"],
        ]),
        ("Feature modules against the planted ones (mean ± std over seeds)", [table]),
        ("Stability across seeds", [
            "ARI between the feature modules of every pair of seeds and the Jaccard index of "
            "the edges of their feature graphs (features linked through the neuron modules "
            "they load on, gsr_pyg.readouts.feature_graph), features matched by their place "
            "in the unshuffled data (each seed draws its own data and column order). "
            "Neurons of different seeds belong to different models and are not matched; "
            "within a run, 'last-refresh edge Jaccard' compares the final neuron graph with "
            "the one learned before it.", stable]),
    ]
    for preset, table_rows in carried.items():
        sections.append((f"Neuron modules of {preset} (seed {seeds[0]})", [
            "The feature module each Louvain module of the final graph carries, with the "
            "sign of its neurons' mean correlation with the module's features (strength: "
            "its absolute value; none below 0.2).", table_rows]))
    sections.append(("Runs", [run_table]))
    for preset, paths in figures.items():
        sections.append((f"Figures: {preset} (seed {seeds[0]})", list(paths)))
    if spectrum is not None:
        sections.append((f"Graph spectrum (seed {seeds[0]})", [
            "Where the latent's energy sits on the spectrum of each preset's final learned "
            "graph: the held-out latent with each neuron's mean removed, its energy per band "
            f"of the normalized Laplacian's eigenvalues ({SPECTRUM_BANDS} equal bands of "
            "[0, 2], gsr_pyg.metrics.graph_fourier_energy, exact), as a fraction of the "
            "total. Low frequencies are patterns shared by linked neurons. The 'neurons "
            f"shuffled' lines put the same latent on the same graph in random orders (mean "
            f"over {SPECTRUM_SHUFFLES}): the spectrum of neurons the graph knows nothing "
            "about.", spectrum]))
    return sections
