"""The figures, tables and report of ``pipelines.learned_graph``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gsr_pyg import metrics, plotting

from ._graph_learning import MODULE_METHODS, graph_evolution_figure

HEADLINE_METHOD = "louvain"
#: Equal bands of the learned graph's spectrum [0, 2] in the spectrum figure.
SPECTRUM_BANDS = 20
#: Random orders of the neurons behind the "neurons shuffled" line of the spectrum figure.
SPECTRUM_SHUFFLES = 10
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
                    figures: dict[str, list[Path]], spectrum: Path | None = None
                    ) -> list[tuple]:
    """The sections of ``report.html``: settings, the summary over seeds, every run, the
    figures of the first seed and the spectrum figure (:func:`spectrum_figure`)."""
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

