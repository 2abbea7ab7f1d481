import os
from pathlib import Path

# One intra-op thread for the suite and every process it starts (papermill kernels, sweep workers), unless
# the caller sets OMP_NUM_THREADS: the tests' tensors are tiny, and two OpenMP threads on a loaded 2-core
# machine spin-wait for each other — the weight-mirroring test took 81 s at 2 threads beside two training
# runs and 0.5 s at 1. Set before torch is imported, which reads it once.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("REPRO_DATA_MIRROR", ROOT.parent / "shared" / "datasets"))


@pytest.fixture
def mirror():
    if not (MIRROR / "mnist").is_dir():
        pytest.skip(f"no dataset mirror at {MIRROR}")
    return MIRROR


@pytest.fixture
def float64():
    """Exact comparisons in double precision; the default dtype is restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_data(n_train=64, n_test=32, n_in=6, n_out=3, task="classification", seed=0):
    from repro.data import Data
    g = torch.Generator().manual_seed(seed)
    xtr, xte = torch.randn(n_train, n_in, generator=g), torch.randn(n_test, n_in, generator=g)
    if task == "classification":
        ltr, lte = torch.randint(0, n_out, (n_train,), generator=g), torch.randint(0, n_out, (n_test,), generator=g)
        oh = lambda l: torch.nn.functional.one_hot(l, n_out).float()  # noqa: E731
        return Data("tiny", task, xtr, oh(ltr), xte, oh(lte), ltr, lte)
    return Data("tiny", task, xtr, torch.randn(n_train, 1, generator=g), xte, torch.randn(n_test, 1, generator=g))
