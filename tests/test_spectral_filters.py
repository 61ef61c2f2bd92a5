"""The spectral family a^T h(L) a and the graph-Fourier read-outs, against dense float64
eigendecompositions built independently (networkx Laplacians, numpy eigh)."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
from numpy.polynomial import chebyshev as npcheb
from torch import nn
from torch_geometric.data import Data
from torch_geometric.utils import coalesce

from gsr_pyg import graphs
from gsr_pyg.metrics import (
    graph_fourier_energy,
    graph_wavelet_energy,
    hammond_kernel,
)
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.spectral import (
    FilteredOperator,
    SpectralFilter,
    as_spectral_filter,
    chebyshev_fit,
    chebyshev_moments,
    filtered_quadratic_form,
    lambda_max_bound,
    quadratic_form,
)

NORMS = [None, "sym"]


# ----------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------

def random_graph(seed: int) -> tuple[Data, nx.Graph]:
    """A random weighted graph with one or two isolated nodes, as Data and networkx."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 24))
    graph = nx.gnp_random_graph(n, float(rng.uniform(0.15, 0.5)), seed=seed)
    graph.add_nodes_from(range(n, n + int(rng.integers(1, 3))))
    for i, j in graph.edges:
        graph[i][j]["weight"] = float(rng.uniform(0.2, 3.0))
    edges = list(graph.edges(data="weight"))
    src = [i for i, _, _ in edges] + [j for _, j, _ in edges]
    dst = [j for _, j, _ in edges] + [i for i, _, _ in edges]
    edge_index, edge_weight = coalesce(torch.tensor([src, dst]),
                                       torch.tensor([w for *_, w in edges] * 2,
                                                    dtype=torch.float64),
                                       graph.number_of_nodes())
    return Data(edge_index=edge_index, edge_weight=edge_weight,
                num_nodes=graph.number_of_nodes()), graph


def nx_eigh(graph: nx.Graph, normalization) -> tuple[np.ndarray, np.ndarray]:
    nodes = sorted(graph.nodes)
    if normalization == "sym":  # isolated nodes: zero row and column, as gsr_pyg.spectral
        matrix = nx.normalized_laplacian_matrix(graph, nodelist=nodes).toarray()
    else:
        matrix = nx.laplacian_matrix(graph, nodelist=nodes).toarray().astype(np.float64)
    return np.linalg.eigh(matrix)


def dense_form(x: torch.Tensor, graph: nx.Graph, normalization, h) -> np.ndarray:
    """sum_k h(lambda_k) (u_k^T a)^2 per row of x, h a numpy function."""
    eigenvalues, vectors = nx_eigh(graph, normalization)
    coefficients = x.detach().double().numpy() @ vectors
    return coefficients**2 @ h(np.clip(eigenvalues, 0.0, None))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# (preset, parameters, the same h in numpy)
PRESETS = [
    ("laplacian", {}, lambda lam: lam),
    ("power", {"p": 2.0}, lambda lam: lam**2),
    ("power", {"p": 1.5}, lambda lam: lam**1.5),
    ("heat", {"t": 0.7}, lambda lam: 1.0 - np.exp(-0.7 * lam)),
    ("high_pass", {"cutoff": 1.2, "sharpness": 6.0},
     lambda lam: (sigmoid(6.0 * (lam / 1.2 - 1)) - sigmoid(-6.0)) / (1 - sigmoid(-6.0))),
]


def random_bumps(seed: int, top: float):
    """A random smooth h >= 0 (a ramp plus Gaussian bumps), in torch and in numpy."""
    rng = np.random.default_rng(100 + seed)
    weights, centres = rng.uniform(0.2, 2.0, 3), rng.uniform(0.0, top, 3)
    widths, slope = rng.uniform(0.2, 1.0, 3) * top / 4, float(rng.uniform(0.0, 0.5))

    def numpy_h(lam):
        bumps = weights * np.exp(-((lam[:, None] - centres) / widths) ** 2)
        return slope * lam + bumps.sum(axis=1)

    def torch_h(lam):
        return torch.from_numpy(numpy_h(lam.cpu().numpy())).to(lam)

    return torch_h, numpy_h


# ----------------------------------------------------------------------------------------
# every response against the dense eigendecomposition
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalization", NORMS)
@pytest.mark.parametrize("seed", range(3))
def test_presets_and_a_random_callable_match_the_dense_eigendecomposition(seed, normalization):
    data, graph = random_graph(seed)
    x = torch.randn(6, data.num_nodes, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    torch_h, numpy_h = random_bumps(seed, lambda_max_bound(data, normalization))
    cases = [(name, params, h) for name, params, h in PRESETS] + [(torch_h, {}, numpy_h)]
    for response, params, h in cases:
        expected = dense_form(x, graph, normalization, h)
        exact = filtered_quadratic_form(x, data, response, normalization, **params)
        assert exact.dtype == torch.float64 and exact.shape == (6,)
        np.testing.assert_allclose(exact.numpy(), expected, rtol=1e-9, atol=1e-10)
        op = FilteredOperator(data, response, normalization, method="chebyshev", order=25,
                              **params)
        bound = op.max_error * x.square().sum(dim=1).numpy()
        error = np.abs(op(x).numpy() - expected)
        assert (error <= bound + 1e-10).all(), (response, error, bound)


def test_chebyshev_error_is_real_and_shrinks_with_the_order():
    data, graph = random_graph(7)
    x = torch.randn(4, data.num_nodes, dtype=torch.float64)
    h = PRESETS[4][2]
    expected = dense_form(x, graph, None, h)
    norms = x.square().sum(dim=1).numpy()
    errors, bounds = [], []
    for order in (5, 30, 120):
        op = FilteredOperator(data, "high_pass", method="chebyshev", order=order,
                              cutoff=1.2, sharpness=6.0)
        error = np.abs(op(x).numpy() - expected)
        assert (error <= op.max_error * norms + 1e-10).all()
        errors.append(error.max())
        bounds.append(op.max_error)
    assert errors[0] > 1e-2          # a low order is visibly off ...
    assert bounds[0] > bounds[1] > bounds[2] and errors[2] < errors[0] / 100   # ... less so


def test_fit_reports_its_sup_error_and_stays_non_negative():
    # the truncated series of a sharp step rings below 0 before it: the fit is lifted
    fit = chebyshev_fit(("high_pass", {"cutoff": 2.0, "sharpness": 40.0}), lambda_max=4.0,
                        order=12)
    assert fit.lift > 1e-2
    lam = np.linspace(0.0, 4.0, 400_001)
    polynomial = npcheb.chebval(2 * lam / 4.0 - 1, fit.coefficients.numpy())
    assert 0.0 <= polynomial.min() < 1e-3     # lifted just enough
    step = (sigmoid(40.0 * (lam / 2.0 - 1)) - sigmoid(-40.0)) / (1 - sigmoid(-40.0))
    assert fit.max_error == pytest.approx(np.abs(step - polynomial).max(), rel=1e-3)
    torch.testing.assert_close(fit(torch.from_numpy(lam[::1000])),
                               torch.from_numpy(polynomial[::1000]))
    # a polynomial response of degree <= K is reproduced up to the lift alone
    square = chebyshev_fit(("power", {"p": 2.0}), lambda_max=3.0, order=4)
    assert square.max_error < 1e-8 and square.max_error == pytest.approx(square.lift, abs=1e-12)


def test_chebyshev_moments_give_every_polynomial_form():
    data, graph = random_graph(2)
    x = torch.randn(5, data.num_nodes, dtype=torch.float64)
    bound = lambda_max_bound(data, "sym")
    moments = chebyshev_moments(x, data, "sym", order=20, lambda_max=bound)
    fit = chebyshev_fit(("heat", {"t": 1.5}), bound, order=20)
    op = FilteredOperator(data, "heat", "sym", method="chebyshev", order=20, t=1.5)
    torch.testing.assert_close(moments @ fit.coefficients, op(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(moments[:, 0], x.square().sum(dim=1))


@pytest.mark.parametrize("normalization", NORMS)
def test_lambda_max_bound_holds_and_beats_gershgorin(normalization):
    for seed in range(6):
        data, graph = random_graph(seed)
        largest = nx_eigh(graph, normalization)[0].max()
        bound = lambda_max_bound(data, normalization)
        assert largest <= bound + 1e-12
        if normalization is None:
            degree = max(d for _, d in graph.degree(weight="weight"))
            assert bound <= 2 * degree + 1e-12
    assert lambda_max_bound(graphs.ring(6)) == 4.0           # bipartite and regular: exact
    assert lambda_max_bound(Data(edge_index=torch.empty(2, 0, dtype=torch.long),
                                 num_nodes=3)) == 0.0


# ----------------------------------------------------------------------------------------
# "laplacian" is today's penalty, bit for bit
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalization", NORMS)
def test_laplacian_preset_is_the_quadratic_form_exactly(normalization):
    data, _ = random_graph(4)
    n = data.num_nodes
    for x in (torch.randn(7, n), torch.randn(7, n, dtype=torch.float64),
              torch.randn(2, n, 3, 4)):
        assert torch.equal(filtered_quadratic_form(x, data, "laplacian", normalization),
                           quadratic_form(x, data, normalization))
        assert torch.equal(FilteredOperator(data, normalization=normalization)(x),
                           quadratic_form(x, data, normalization))


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))


def _penalty_and_grad(reg, model, x):
    model.zero_grad()
    model(x)
    value = reg.penalty()
    value.backward()
    reg.step()
    return value.detach(), model[0].weight.grad.clone()


def test_regularizer_laplacian_response_is_the_default_penalty_bit_for_bit():
    x = torch.randn(9, 5)
    results = []
    for option in ({}, {"spectral_response": "laplacian"},
                   {"spectral_response": ("laplacian", {})},
                   {"spectral_response": {"0": SpectralFilter()}}):
        model = _mlp()
        reg = GraphSpectralRegularizer(model, {"0": graphs.grid(3, 4)}, weight=0.3,
                                       normalization="sym", **option)
        assert type(reg.operator("0")).__name__ == "LaplacianOperator"
        results.append(_penalty_and_grad(reg, model, x))
    for value, grad in results[1:]:
        assert torch.equal(value, results[0][0]) and torch.equal(grad, results[0][1])


# ----------------------------------------------------------------------------------------
# gradients, layouts, isolated nodes, devices of the method choice
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["exact", "chebyshev"])
@pytest.mark.parametrize("normalization", NORMS)
def test_gradcheck(method, normalization):
    data, _ = random_graph(1)
    op = FilteredOperator(data, "high_pass", normalization, method=method, order=12,
                          cutoff=0.8)
    for shape in ((3, data.num_nodes), (2, data.num_nodes, 3)):
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(op, (x,))


@pytest.mark.parametrize("method", ["exact", "chebyshev"])
def test_conv_layout_and_float32(method):
    data, graph = random_graph(5)
    x = torch.randn(2, data.num_nodes, 3, 2, dtype=torch.float64)
    op = FilteredOperator(data, "heat", method=method, t=0.5)
    rows = x.permute(0, 2, 3, 1).reshape(-1, data.num_nodes)
    expected = dense_form(rows, graph, None, lambda lam: 1 - np.exp(-0.5 * lam))
    np.testing.assert_allclose(op(x).reshape(-1).numpy(), expected,
                               rtol=1e-6 if method == "chebyshev" else 1e-10, atol=1e-6)
    single = op(x.float())
    assert single.dtype == torch.float32 and single.shape == (2, 3, 2)
    np.testing.assert_allclose(single.reshape(-1).numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("normalization", NORMS)
@pytest.mark.parametrize("method", ["exact", "chebyshev"])
def test_isolated_nodes_contribute_h_of_zero(normalization, method):
    # nodes 3 and 4 have no edge: eigenvalue 0, so a_i^2 h(0) each
    data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=5)
    x = torch.zeros(1, 5, dtype=torch.float64)
    x[0, 3], x[0, 4] = 2.0, -1.0
    assert float(filtered_quadratic_form(x, data, "heat", normalization, method=method,
                                         t=1.0)) == pytest.approx(0.0, abs=1e-7)
    offset = filtered_quadratic_form(x, data, lambda lam: lam + 0.25, normalization,
                                     method=method)
    assert float(offset) == pytest.approx(0.25 * 5.0, rel=1e-6)


def test_auto_method_follows_the_size_threshold():
    assert FilteredOperator(graphs.grid(8, 8), "heat", t=1.0).method == "exact"
    large = FilteredOperator(graphs.ring(1025), "heat", t=1.0)
    assert large.method == "chebyshev" and large.order == 20
    assert large.lambda_max == 4.0 and large.max_error < 1e-6
    assert "method='chebyshev'" in repr(large)


def test_a_graph_without_edges():
    data = Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=4)
    x = torch.randn(3, 4, dtype=torch.float64)
    for method in ("exact", "chebyshev"):
        got = filtered_quadratic_form(x, data, lambda lam: lam + 1.0, method=method)
        torch.testing.assert_close(got, x.square().sum(dim=1))


# ----------------------------------------------------------------------------------------
# refusals
# ----------------------------------------------------------------------------------------

RING = graphs.ring(6)
X = torch.randn(2, 6, dtype=torch.float64)

REFUSED = [
    (lambda: filtered_quadratic_form(X, RING, lambda lam: lam - 1.0), ValueError,
     # the eigenvalue 0 comes out of the eigensolver as 0 or a rounding error of 1e-16
     r"response callable .*<lambda> is negative on the spectrum of L: "
     r"h\((0|-?[0-9.]+e-1[5-7])\) = -1; a penalty a\^T h\(L\) a must be bounded below"),
    (lambda: filtered_quadratic_form(X, RING, lambda lam: torch.cos(lam), method="chebyshev"),
     ValueError, r"is negative on \[0, lambda_max=4\]: h\(3\.14\d*\) = -0\.99"),
    (lambda: filtered_quadratic_form(X, RING, "heet", t=1.0), ValueError,
     r"response must be a preset name \('laplacian', 'power', 'heat', 'high_pass'\) or a "
     r"callable on eigenvalues, got 'heet'; closest: 'heat'"),
    (lambda: filtered_quadratic_form(X, RING, "heat", p=2.0), ValueError,
     r"response 'heat' takes parameters \('t',\), got unknown parameter 'p'"),
    (lambda: filtered_quadratic_form(X, RING, "heat"), ValueError,
     r"response 'heat' needs the parameter t \(a number > 0\), e\.g\. \('heat', \{'t': 1\.0\}\)"),
    (lambda: filtered_quadratic_form(X, RING, "laplacian", t=1.0), ValueError,
     r"response 'laplacian' takes no parameters, got unknown parameter 't'"),
    (lambda: filtered_quadratic_form(X, RING, "power", p=-1.0), ValueError,
     r"parameter p of response 'power' must be finite and > 0, got -1\.0"),
    (lambda: filtered_quadratic_form(X, RING, lambda lam: lam, t=1.0), ValueError,
     r"response is a callable, which takes no parameters"),
    (lambda: filtered_quadratic_form(X, RING, lambda lam: lam.sum()), ValueError,
     r"must return a tensor of the shape of its input \(6,\), got tensor of shape \(\)"),
    (lambda: filtered_quadratic_form(X, RING, lambda lam: lam * float("nan")), ValueError,
     r"is not finite on the spectrum of L: h\([^)]*\) = nan"),
    (lambda: filtered_quadratic_form(torch.randn(2, 5), RING, "heat", t=1.0), ValueError,
     r"x has 5 features in dimension 1 but the graph has 6 nodes"),
    (lambda: filtered_quadratic_form(torch.randn(6), RING, "heat", t=1.0), ValueError,
     r"x must have at least 2 dimensions, got tensor of shape \(6,\)"),
    (lambda: filtered_quadratic_form(X, RING, "heat", method="lanczos", t=1.0), ValueError,
     r"method must be one of \('auto', 'exact', 'chebyshev'\), got 'lanczos'"),
    (lambda: filtered_quadratic_form(X, RING, "heat", order=0, t=1.0), ValueError,
     r"order must be >= 1, got 0"),
    (lambda: FilteredOperator(RING, SpectralFilter("heat", t=1.0), order=30), ValueError,
     r"response is a SpectralFilter, which carries its own method, order and parameters; "
     r"got order=30 beside it"),
    (lambda: as_spectral_filter(("heat", 1.0)), TypeError,
     r"response as a pair must be \(preset name, \{parameter: value\}\), got \('heat', 1\.0\)"),
    (lambda: chebyshev_moments(X, RING, lambda_max=3.0), ValueError,
     r"lambda_max must be at least the bound 4 of the graph's largest eigenvalue"),
]


@pytest.mark.parametrize("call, error, match", REFUSED)
def test_refusals_name_what_is_wrong(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------------
# the regularizer option
# ----------------------------------------------------------------------------------------

def test_regularizer_heat_penalty_config_state_and_resume():
    x = torch.randn(8, 5, dtype=torch.float64)
    model = _mlp().double()
    grid = graphs.grid(3, 4)
    reg = GraphSpectralRegularizer(model, {"0": grid}, weight=0.5,
                                   spectral_response=("heat", {"t": 2.0}), rayleigh=True)
    assert isinstance(reg.operator("0"), FilteredOperator)
    assert reg.config()["layers"]["0"]["spectral_response"] == {
        "response": "heat", "params": {"t": 2.0}, "method": "auto", "order": 20}
    model(x)
    a = reg.activations("0").detach()
    _, graph = _nx_grid(3, 4)
    expected = 0.5 * np.mean(dense_form(a, graph, None, lambda lam: 1 - np.exp(-2 * lam))
                             / a.square().sum(dim=1).numpy())
    assert float(reg.penalty().detach()) == pytest.approx(expected, rel=1e-10)
    reg.step()
    state = reg.state_dict()
    assert state["layers"]["0"]["spectral_response"]["response"] == "heat"
    resumed_model = _mlp().double()
    resumed = GraphSpectralRegularizer(resumed_model, {"0": grid}, weight=0.5,
                                       spectral_response=("heat", {"t": 2.0}), rayleigh=True)
    resumed.load_state_dict(state)
    assert resumed.spectral_response("0") == SpectralFilter("heat", t=2.0)
    assert isinstance(resumed.operator("0"), FilteredOperator)
    model(x), resumed_model(x)
    assert torch.equal(reg.penalty(), resumed.penalty())
    other = GraphSpectralRegularizer(_mlp().double(), {"0": grid})
    with pytest.raises(ValueError, match=r"regularizer state of layer '0' was saved with "
                                         r"spectral_response \{'response': 'heat'"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"saved with spectral_response 'laplacian', but "
                                         r"this regularizer has \{'response': 'heat'"):
        resumed.load_state_dict(other.state_dict())


def _nx_grid(rows, cols):
    graph = nx.Graph()
    graph.add_nodes_from(range(rows * cols))
    for r in range(rows):
        for c in range(cols):
            if c + 1 < cols:
                graph.add_edge(r * cols + c, r * cols + c + 1)
            if r + 1 < rows:
                graph.add_edge(r * cols + c, (r + 1) * cols + c)
    return None, graph


def test_regularizer_tokens_with_mask_and_per_layer_responses():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 6)).double()
    ring, path = graphs.ring(6), graphs.grid(1, 6)
    power = SpectralFilter("power", p=1.5, method="chebyshev", order=30)
    reg = GraphSpectralRegularizer(model, {"0": ring, "2": path}, node_dim=-1,
                                   normalization={"2": "sym"},
                                   spectral_response={"0": power})
    assert reg.spectral_response("2") == SpectralFilter()
    assert reg.config()["layers"]["2"]["spectral_response"] == "laplacian"
    x = torch.randn(2, 4, 3, dtype=torch.float64)   # [B, T, 3] -> outputs [B, T, 6]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    model(x)
    first = reg.activations("0").detach()[mask]
    second = reg.activations("2").detach()[mask]
    _, ring_nx = _nx_grid(1, 6)
    ring_nx.add_edge(5, 0)
    by_hand_ring = dense_form(first, ring_nx, None, lambda lam: lam**1.5).mean()
    by_hand_path = dense_form(second, _nx_grid(1, 6)[1], "sym", lambda lam: lam).mean()
    penalties = reg.penalties(mask=mask)
    bound = reg.operator("0").max_error * first.square().sum(dim=1).mean().item()
    assert abs(float(penalties["0"].detach()) - by_hand_ring) <= bound + 1e-12
    assert float(penalties["2"].detach()) == pytest.approx(by_hand_path, rel=1e-10)
    reg.step()
    reg.set_graph("0", graphs.grid(2, 3))   # a new graph keeps the layer's response
    assert reg.operator("0").filter == power


def test_regularizer_refuses_a_response_for_another_objective():
    with pytest.raises(ValueError, match=r"layer '0' has objective='spatial_correlation', "
                                         r"which does not use spectral_response="
                                         r"SpectralFilter\('heat', t=1\.0"):
        GraphSpectralRegularizer(_mlp(), {"0": graphs.grid(3, 4)},
                                 objective="spatial_correlation",
                                 spectral_response=("heat", {"t": 1.0}))
    with pytest.raises(ValueError, match=r"spectral_response for layer '0' 'heat' needs the "
                                         r"parameter t"):
        GraphSpectralRegularizer(_mlp(), {"0": graphs.grid(3, 4)}, spectral_response="heat")


# ----------------------------------------------------------------------------------------
# read-outs
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalization", NORMS)
def test_fourier_energy_is_parseval_and_matches_the_dense_computation(normalization):
    data, graph = random_graph(3)
    x = torch.randn(40, data.num_nodes, dtype=torch.float64)
    eigenvalues, vectors = nx_eigh(graph, normalization)
    expected = ((x.numpy() @ vectors) ** 2).mean(axis=0)
    total = x.square().sum(dim=1).mean().item()
    exact = graph_fourier_energy(x, data, normalization)
    assert exact.method == "exact" and exact.edges is None
    np.testing.assert_allclose(exact.frequencies.numpy(), np.clip(eigenvalues, 0, None),
                               atol=1e-10)
    # a repeated eigenvalue may split its energy differently: compare per distinct value
    for value in np.unique(np.round(eigenvalues, 8)):
        at = np.abs(eigenvalues - value) < 1e-7
        assert exact.energy.numpy()[at].sum() == pytest.approx(expected[at].sum(), rel=1e-9)
    assert float(exact.energy.sum()) == pytest.approx(total, rel=1e-12)
    banded = graph_fourier_energy(x, data, normalization, bands=5)
    bound = lambda_max_bound(data, normalization)
    np.testing.assert_allclose(banded.edges.numpy(), np.linspace(0, bound, 6))
    band = np.minimum((np.clip(eigenvalues, 0, None) / bound * 5).astype(int), 4)
    np.testing.assert_allclose(banded.energy.numpy(),
                               np.bincount(band, weights=expected, minlength=5), rtol=1e-9)
    estimate = graph_fourier_energy(x, data, normalization, bands=5, method="chebyshev",
                                    order=60)
    assert estimate.method == "chebyshev"
    assert float(estimate.energy.sum()) == pytest.approx(total, rel=1e-10)
    assert bool((estimate.energy >= -1e-12).all())
    # the estimate is sum_k g_j(lambda_k) E_k for Jackson-damped band indicators g_j,
    # built here from quadrature and Jackson's formula (Weisse et al. 2006, eq. 71)
    np.testing.assert_allclose(estimate.energy.numpy(),
                               jackson_bands(eigenvalues, bound, 5, 60) @ expected,
                               rtol=1e-7, atol=1e-9)


def jackson_bands(eigenvalues, bound, bands, order):
    """[bands, N] damped Chebyshev series of the band indicators at the eigenvalues: the
    series of 1 on [x_a, x_b] is (2 - [k=0]) / pi * integral of cos(k theta) over
    [arccos x_b, arccos x_a]."""
    n = order + 2
    k = np.arange(order + 1)
    damping = ((n - k) * np.cos(np.pi * k / n) + np.sin(np.pi * k / n) / np.tan(np.pi / n)) / n
    angles = np.arccos(np.linspace(-1.0, 1.0, bands + 1))
    x = np.clip(2 * np.clip(eigenvalues, 0, None) / bound - 1, -1, 1)
    rows = []
    for j in range(bands):
        upper, lower = angles[j], angles[j + 1]
        coefficients = np.empty(order + 1)
        coefficients[0] = (upper - lower) / np.pi
        coefficients[1:] = 2 * (np.sin(k[1:] * upper) - np.sin(k[1:] * lower)) / (k[1:] * np.pi)
        rows.append(npcheb.chebval(x, coefficients * damping))
    return np.array(rows)


def test_one_eigenvector_lands_in_its_band_and_its_scale():
    data = graphs.grid(6, 6)
    _, graph = _nx_grid(6, 6)
    eigenvalues, vectors = nx_eigh(graph, None)
    bound = lambda_max_bound(data)                       # 8 for this grid
    index = int(np.argmin(np.abs(eigenvalues - 0.7 * bound)))  # mid-band 5 of 8
    x = torch.from_numpy(vectors[:, index]).unsqueeze(0) * 3.0
    for method in ("exact", "chebyshev"):
        spectrum = graph_fourier_energy(x, data, bands=8, method=method, order=120)
        band = int(eigenvalues[index] / bound * 8)
        assert int(spectrum.energy.argmax()) == band
        assert float(spectrum.energy[band]) > (0.999 if method == "exact" else 0.8) * 9.0
    wavelets = graph_wavelet_energy(x, data, num_scales=8)
    lam = torch.tensor(eigenvalues[index], dtype=torch.float64)
    expected = hammond_kernel(wavelets.scales * lam).square() * 9.0
    torch.testing.assert_close(wavelets.energy, expected, rtol=1e-9, atol=1e-12)
    # the scale that holds it most is the one whose kernel peaks nearest its eigenvalue
    nearest = int(torch.argmin((wavelets.peaks.log() - lam.log()).abs()))
    assert int(wavelets.energy.argmax()) == nearest
    estimate = graph_wavelet_energy(x, data, num_scales=8, method="chebyshev", order=200)
    torch.testing.assert_close(estimate.energy, wavelets.energy, atol=0.02 * 9.0, rtol=0)
    assert float(estimate.lowpass) == pytest.approx(float(wavelets.lowpass), abs=0.02 * 9.0)


def test_readouts_follow_node_dim_and_mask():
    data, _ = random_graph(6)
    n = data.num_nodes
    tokens = torch.randn(3, 5, n, dtype=torch.float64)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) > 0.4
    rows = tokens[mask]
    masked = graph_fourier_energy(tokens, data, "sym", node_dim=-1, mask=mask)
    torch.testing.assert_close(masked.energy, graph_fourier_energy(rows, data, "sym").energy)
    wavelets = graph_wavelet_energy(tokens, data, node_dim=-1, mask=mask)
    torch.testing.assert_close(wavelets.energy, graph_wavelet_energy(rows, data).energy)
    with pytest.raises(ValueError, match=r"bands must be >= 1, got 0"):
        graph_fourier_energy(rows, data, bands=0)
    with pytest.raises(ValueError, match=r"scales must be a non-empty 1-D sequence of finite "
                                         r"numbers > 0, got \[1\.0, -2\.0\]"):
        graph_wavelet_energy(rows, data, scales=[1.0, -2.0])


def test_hammond_kernel_is_smooth_and_peaks_where_documented():
    x = torch.linspace(0.0, 6.0, 60_001, dtype=torch.float64)
    g = hammond_kernel(x)
    peak = 2 - 1 / math.sqrt(3)
    assert float(x[g.argmax()]) == pytest.approx(peak, abs=1e-4)
    top = float(hammond_kernel(torch.tensor([peak], dtype=torch.float64)))
    assert top == pytest.approx(1.3849001794597489, rel=1e-12) and float(g.max()) <= top
    slope = torch.diff(g) / torch.diff(x)
    assert float(torch.diff(slope).abs().max()) < 1e-3       # continuous first derivative
