"""Draw docs/figures/spectral_responses.png: the preset responses h of gsr_pyg.spectral and
Chebyshev polynomials standing for one of them.

    python tools/plot_spectral_responses.py [--out PATH]

Left: each preset on the spectrum of a ``"sym"`` Laplacian, [0, 2], divided by its value at
2 to compare shapes. Right: the ``"high_pass"`` step (cutoff 1, sharpness 10) and its
Chebyshev polynomials of order 5, 10 and 20 (:func:`gsr_pyg.spectral.chebyshev_fit`), each
with its reported ``max_error`` and the lift that keeps it >= 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gsr_pyg.spectral import SpectralFilter, chebyshev_fit  # noqa: E402

OUT = ROOT / "docs" / "figures" / "spectral_responses.png"
PRESETS = [
    (SpectralFilter("laplacian"), "laplacian: $\\lambda$"),
    (SpectralFilter("power", p=2.0), "power, p=2: $\\lambda^2$"),
    (SpectralFilter("power", p=0.5), "power, p=0.5: $\\sqrt{\\lambda}$"),
    (SpectralFilter("heat", t=2.0), "heat, t=2: $1 - e^{-2\\lambda}$"),
    (SpectralFilter("heat", t=10.0), "heat, t=10"),
    (SpectralFilter("high_pass", cutoff=1.0), "high_pass, cutoff 1, sharpness 10"),
]


def draw(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = torch.linspace(0.0, 2.0, 801, dtype=torch.float64)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for spectral_filter, label in PRESETS:
        values = spectral_filter(lam)
        left.plot(lam, values / values[-1], label=label)
    left.set(xlabel="graph frequency $\\lambda$ (sym Laplacian)", ylabel="$h(\\lambda) / h(2)$",
             title="Preset responses (penalty weight per frequency)")
    left.legend(fontsize=8)
    step = SpectralFilter("high_pass", cutoff=1.0)
    right.plot(lam, step(lam), color="black", linewidth=2.5, label="high_pass (exact)")
    for order in (5, 10, 20):
        fit = chebyshev_fit(step, lambda_max=2.0, order=order)
        right.plot(lam, fit(lam), label=f"K={order}: max_error {fit.max_error:.3f}, "
                                        f"lift {fit.lift:.3f}")
    right.axhline(0.0, color="grey", linewidth=0.8)
    right.set(xlabel="graph frequency $\\lambda$ (sym Laplacian, $\\lambda_{max} = 2$)",
              ylabel="$h(\\lambda)$, $p_K(\\lambda)$",
              title="Chebyshev polynomials of order K (lifted to stay $\\geq 0$)")
    right.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT}")
    args = parser.parse_args(argv)
    print(f"wrote {draw(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
