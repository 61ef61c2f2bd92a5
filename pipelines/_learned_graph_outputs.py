"""The figures, tables and report of ``pipelines.learned_graph``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gsr_pyg import metrics, plotting

from ._graph_learning import MODULE_METHODS, graph_evolution_figure

HEADLINE_METHOD = "louvain"
SUMMARY_FIELDS = ("components", "mse", "train_time_s", "modularity",
                  *(f"ari_{m}" for m in MODULE_METHODS), *(f"nmi_{m}" for m in MODULE_METHODS))


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


def report_sections(settings, run_settings: dict, rows: list[dict], summaries: list[dict],
                    figures: dict[str, list[Path]]) -> list[tuple]:
    """The sections of ``report.html``: settings, the summary over seeds, every run and the
    figures of the first seed."""
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
    seeds = run_settings["seeds"]
    sections = [
        ("Settings", [
            f"Planted modules {settings.modules}: within-module correlation "
            f"{settings.within_corr:g}, shift {settings.shift:g}, noise {settings.noise:g}, "
            f"{settings.active_per_sample} active per sample, perturbation "
            f"{settings.perturb:g}; {settings.samples} training and {settings.eval_samples} "
            f"held-out samples. Seeds {seeds}; device {run_settings['device']}.",
            [{"preset": p, **{k: str(v) for k, v in s.items()}}
             for p, s in run_settings["presets"].items()],
            "Feature modules: every feature joins the neuron module whose neurons it "
            "correlates with most (mean |r| on the held-out samples). Neuron modules: louvain "
            f"(headline), spectral clustering with k = {len(settings.modules)}, connected "
            "components. ARI / NMI against the planted feature modules; modularity of the "
            "louvain modules and of the neurons grouped by the planted module they carry.",
            "Command: " + run_settings["command"],
        ]),
        ("Summary (mean ± std over seeds)", [table]),
        ("Runs", [run_table]),
    ]
    for preset, paths in figures.items():
        sections.append((f"Figures: {preset} (seed {seeds[0]})", list(paths)))
    return sections

