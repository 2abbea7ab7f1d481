"""Figure functions: the same runs give the same PNG bytes (DVC caches figures by content)."""
import io

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import f3  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    return buf.getvalue()


def _finals() -> pd.DataFrame:
    rows = []
    for i, a in enumerate(["BP", "DFA", "F3-Error", "DRTP"]):
        for seed in (1, 2, 3):
            rows.append({"dataset": "sgemm", "algorithm": a, "seed": seed, "status": "ok",
                         "final_test_loss": 0.01 * (i + 1) + 0.001 * seed, "final_test_error": 1.0 + i + 0.1 * seed})
    return pd.DataFrame(rows)


def test_strip_plots_are_byte_stable_and_leave_numpy_rng_alone():
    fin = _finals()
    metrics = {"sgemm": {"test_mse": {"BP": {"mean": 0.012}}, "gap_closed": {"F3-Error": 90.0}}}
    order = ["BP", "DFA", "F3-Error", "DRTP"]
    np.random.seed(123)
    expected_next = np.random.uniform()
    np.random.seed(123)
    first = [_png(f3.plot_gap(fin, metrics, order)), _png(f3.plot_mnist_error(fin, order))]
    assert np.random.uniform() == expected_next  # the caller's RNG stream is untouched
    np.random.uniform(size=7)  # a different global state must not change the figure
    second = [_png(f3.plot_gap(fin, metrics, order)), _png(f3.plot_mnist_error(fin, order))]
    assert first == second


def test_vit_scale_flags_a_reduced_run_and_the_figure_says_so():
    full = f3.vit_scale({"epochs": 100, "n_train": None})
    assert full == {"epochs": 100, "n_train": 60000, "reduced": False}
    assert f3.vit_scale({"epochs": 100, "n_train": 10000})["reduced"]
    assert f3.vit_scale({"epochs": 20, "n_train": None})["reduced"]
    fin = pd.DataFrame({"algorithm": ["BP", "F3"], "status": ["ok", "ok"], "best_test_error": [3.0, 4.0],
                        "final_test_error": [3.5, 4.5]})
    small = {"epochs": 20, "n_train": 10000, "seeds": [1]}
    assert f3.vit_metrics(fin, small)["scale"]["reduced"]
    fig = f3.plot_vit(fin, small)
    title = fig.axes[0].get_title()
    assert "20 epochs" in title and "first 10,000 training samples" in title and "100 epochs on all 60,000" in title
    plt.close(fig)
    fig = f3.plot_vit(fin, {"epochs": 100, "n_train": None, "seeds": [1]})
    assert "first" not in fig.axes[0].get_title()
    plt.close(fig)
