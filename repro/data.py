"""Data layer: registry of datasets, checksummed fetching (mirror first, then the original
distributors), and loaders that turn raw files into in-memory tensors with each paper's
preprocessing and split.

Layout on disk: ``<root>/<dataset>/<file>`` with the files exactly as the distributor serves them
(``root`` defaults to ``data/``, tracked by ``data.dvc``). A mirror directory (``REPRO_DATA_MIRROR``)
has the same layout and is used before the network.

Nothing in this module knows about models or learning rules.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

MIRROR_ENV = "REPRO_DATA_MIRROR"
ROOT_ENV = "REPRO_DATA_ROOT"


class DataError(RuntimeError):
    """Any problem obtaining or reading a dataset; the message is one line meant for the user."""


class ChecksumError(DataError):
    pass


class DataUnavailable(DataError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str
    urls: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    files: tuple[RemoteFile, ...]
    task: str  # "classification" | "regression"
    citation: str
    licence: str
    offline_here: bool = True  # a copy is in this project's shared mirror
    n_in: int = 0  # flattened input size
    n_out: int = 0  # classes, or 1 for regression
    n_train: int = 0  # training samples after the paper's split
    base: str | None = None  # derived dataset: built from this dataset's files (no files of its own)


_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/"

REGISTRY: dict[str, DatasetEntry] = {
    "mnist": DatasetEntry(
        "mnist",
        tuple(
            RemoteFile(f, md5, tuple(u + f for u in _MNIST_URLS), sha, size)
            for f, md5, sha, size in [
                ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                 "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
                ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                 "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
                ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                 "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
                ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                 "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
            ]
        ),
        "classification",
        "LeCun, Bottou, Bengio, Haffner (1998), Proc. IEEE 86(11)",
        "no explicit licence (commonly listed as CC BY-SA 3.0)",
        n_in=784, n_out=10, n_train=60000,
    ),
    "fashion_mnist": DatasetEntry(
        "fashion_mnist",
        tuple(
            RemoteFile(f, md5, (_FMNIST_URL + f,), sha, size)
            for f, md5, sha, size in [
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", None, 26421880),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                 "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", None, 4422102),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                 "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
            ]
        ),
        "classification",
        "Xiao, Rasul, Vollgraf (2017), arXiv:1708.07747",
        "MIT",
        offline_here=False,
        n_in=784, n_out=10, n_train=60000,
    ),
    "cifar10": DatasetEntry(
        "cifar10",
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), None, 170498071),),
        "classification",
        "Krizhevsky (2009), Learning Multiple Layers of Features from Tiny Images",
        "no formal licence",
        offline_here=False,
        n_in=3072, n_out=10, n_train=50000,
    ),
    "cifar100": DatasetEntry(
        "cifar100",
        (RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),),
        "classification",
        "Krizhevsky (2009), Learning Multiple Layers of Features from Tiny Images",
        "no formal licence",
        offline_here=False,
        n_in=3072, n_out=100, n_train=50000,
    ),
    "wine_quality": DatasetEntry(
        "wine_quality",
        (
            RemoteFile("winequality-red.csv", "2daeecee174368f8a33b82c8cccae3a5",
                       (_UCI + "wine-quality/winequality-red.csv",), None, 84199),
            RemoteFile("winequality-white.csv", "5d9ff0f7f716dace19e3ab4578775fd7",
                       (_UCI + "wine-quality/winequality-white.csv",), None, 264426),
        ),
        "regression",
        "Cortez et al. (2009), Decision Support Systems 47(4)",
        "CC BY 4.0 (UCI)",
        n_in=12, n_out=1, n_train=5197,
    ),
    "sgemm": DatasetEntry(
        "sgemm",
        (RemoteFile("sgemm_product_dataset.zip", "57692001d41b58ec04f3268e2132336b",
                    (_UCI + "00440/sgemm_product_dataset.zip",), None, 3186088),),
        "regression",
        "Ballester-Ripoll, Paredes, Pajarola (2017), arXiv:1712.00233; Nugteren & Codreanu (2015)",
        "CC BY 4.0 (UCI)",
        n_in=14, n_out=1, n_train=773120,
    ),
    # FFzero regression tasks (ffzero.md §2.8, §3): no downloads. The synthetic functions are generated
    # (12,000 samples, seed SYNTHETIC_SEED: the authors' seed is unknown, a reconstruction); MNIST-as-
    # regression reads MNIST's files and regresses the digit's value.
    "ffzero_function1": DatasetEntry(
        "ffzero_function1", (), "regression", "synthetic: y = sin(x1) + cos(x2), x ~ U(-1, 1)^2 (FFzero code)",
        "generated", n_in=2, n_out=1, n_train=10000),
    "ffzero_function2": DatasetEntry(
        "ffzero_function2", (), "regression",
        "synthetic: y = exp(x1) sin(x2) + x3 cos(x4) - x5 x1, x ~ U(-1, 1)^5 (FFzero code)",
        "generated", n_in=5, n_out=1, n_train=10000),
    "mnist_regression": DatasetEntry(
        "mnist_regression", (), "regression", "MNIST digits, target 2(label/9 - 1/2) (FFzero code)",
        "as MNIST", n_in=784, n_out=1, n_train=60000, base="mnist"),
}
SYNTHETIC_SEED = 0
SYNTHETIC_N, SYNTHETIC_TRAIN, SYNTHETIC_NOISE = 12_000, 10_000, 0.05


def dataset_names() -> list[str]:
    return list(REGISTRY)


def entry(name: str) -> DatasetEntry:
    if name not in REGISTRY:
        raise DataError(f"dataset={name!r} is not known; allowed: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "data"))


def default_mirror() -> Path | None:
    m = os.environ.get(MIRROR_ENV)
    return Path(m) if m else None


# --------------------------------------------------------------------------------------------- fetch
def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, rf: RemoteFile) -> bool:
    """True iff ``path`` has the registered checksum(s)."""
    if not path.is_file():
        return False
    if rf.size is not None and path.stat().st_size != rf.size:
        return False
    if _digest(path, "md5") != rf.md5:
        return False
    return rf.sha256 is None or _digest(path, "sha256") == rf.sha256


def _install(tmp: Path, dest: Path, rf: RemoteFile, source: str) -> None:
    """Move a verified temporary file into place; a bad file is deleted and never used."""
    if not verify(tmp, rf):
        tmp.unlink(missing_ok=True)
        raise ChecksumError(f"{source}: checksum mismatch for {rf.name} (expected md5 {rf.md5}); file rejected")
    os.replace(tmp, dest)


def fetch(name: str, root: Path | str | None = None, mirror: Path | str | None = None,
          timeout: float = 30.0) -> Path:
    """Make ``<root>/<name>/`` hold every registered file of dataset ``name``, verified.

    Order: an existing good copy in root; the mirror directory; each original URL. A corrupt file is
    rejected (ChecksumError names it) and never replaces a good copy.
    """
    e = entry(name)
    root = Path(root) if root is not None else default_root()
    if e.base is not None:
        return fetch(e.base, root, mirror, timeout)
    if not e.files:  # generated: nothing to fetch
        return root / name
    mirror = Path(mirror) if mirror is not None else default_mirror()
    dest_dir = root / name
    dest_dir.mkdir(parents=True, exist_ok=True)
    for rf in e.files:
        dest = dest_dir / rf.name
        if verify(dest, rf):
            continue
        if dest.exists():  # present but wrong: never used; replaced only by a verified copy
            bad = f"{dest}: checksum mismatch (expected md5 {rf.md5}); fetching a fresh copy"
            print(bad)
        tmp = dest_dir / f"{rf.name}.{os.getpid()}.part"  # per process: parallel workers may fetch at once
        errors: list[str] = []
        if mirror is not None and (mirror / name / rf.name).is_file():
            shutil.copyfile(mirror / name / rf.name, tmp)
            _install(tmp, dest, rf, f"mirror file {mirror / name / rf.name}")
            continue
        if mirror is not None:
            errors.append(f"not in mirror {mirror / name}")
        for url in rf.urls:
            if os.environ.get("REPRO_OFFLINE"):  # tests and air-gapped machines: do not try the network
                errors.append(f"{url}: REPRO_OFFLINE is set")
                continue
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
            except Exception as exc:  # network errors of every kind
                tmp.unlink(missing_ok=True)
                errors.append(f"{url}: {type(exc).__name__}: {exc}")
                continue
            _install(tmp, dest, rf, url)
            break
        else:
            raise DataUnavailable(
                f"dataset {name!r}: cannot obtain {rf.name} from {rf.urls[0]} ({'; '.join(errors)[:300]}); "
                f"connect to the internet or set {MIRROR_ENV} to a folder holding {name}/{rf.name}"
            )
    return dest_dir


def try_fetch(name: str, root: Path | str | None = None) -> str | None:
    """Fetch ``name`` if needed; None when it is ready, else the one-line reason it is not (for
    pipelines that skip a dataset they cannot obtain instead of failing)."""
    try:
        fetch(name, root)
    except DataError as exc:
        return str(exc)
    return None


def available(name: str, root: Path | str | None = None) -> bool:
    """True iff all files of ``name`` are present and verified in root (no fetching)."""
    root = Path(root) if root is not None else default_root()
    e = entry(name)
    if e.base is not None:
        return available(e.base, root)
    return all(verify(root / name / rf.name, rf) for rf in e.files)


def _require(name: str, root: Path | str | None, fetch_missing: bool) -> Path:
    root = Path(root) if root is not None else default_root()
    if entry(name).base is not None:
        return _require(entry(name).base, root, fetch_missing)
    if available(name, root):
        return root / name
    if fetch_missing:
        return fetch(name, root)
    raise DataUnavailable(f"dataset {name!r} is not in {root / name}; run `python -m repro fetch {name}`")


# ------------------------------------------------------------------------------------------- tensors
@dataclass
class Data:
    """A dataset as in-memory tensors. ``y_*`` are float targets ([N, C] one-hot for classification,
    [N, 1] standardised for regression); ``labels_*`` are class indices (classification only)."""

    name: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    labels_train: torch.Tensor | None = None
    labels_test: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)
    x_val: torch.Tensor | None = None  # a validation split held out of the training set (``hold_out``)
    y_val: torch.Tensor | None = None
    labels_val: torch.Tensor | None = None

    @property
    def n_in(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def n_out(self) -> int:
        return self.y_train.shape[1]

    def to(self, device) -> "Data":
        t = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Data(**t)

    def subset(self, n_train: int | None, n_test: int | None) -> "Data":
        """First ``n`` samples of each split (deterministic; used by the smoke scale)."""
        def cut(v, n):
            return v if (v is None or n is None) else v[:n]
        return Data(self.name, self.task, cut(self.x_train, n_train), cut(self.y_train, n_train),
                    cut(self.x_test, n_test), cut(self.y_test, n_test), cut(self.labels_train, n_train),
                    cut(self.labels_test, n_test), dict(self.meta), self.x_val, self.y_val, self.labels_val)

    def hold_out(self, n_val: int) -> "Data":
        """The last ``n_val`` training samples as a validation split (``x_val``…), the rest as training set
        (deterministic, the same split for every seed; on MNIST with n_val 10 000: the classic 50k / 10k).
        The test split is untouched: a hyperparameter chosen on ``val`` is then judged on ``test``."""
        n = len(self.x_train)
        if not isinstance(n_val, int) or isinstance(n_val, bool) or not 0 < n_val < n:
            raise DataError(f"n_val={n_val!r} must be an integer between 1 and {n - 1} (the training set has {n})")
        if self.x_val is not None:
            raise DataError(f"{self.name}: a validation split is already held out")
        k = n - n_val

        def head(v):
            return None if v is None else v[:k]

        def tail(v):
            return None if v is None else v[k:]
        return Data(self.name, self.task, head(self.x_train), head(self.y_train), self.x_test, self.y_test,
                    head(self.labels_train), self.labels_test, {**self.meta, "n_val": n_val},
                    tail(self.x_train), tail(self.y_train), tail(self.labels_train))


def _one_hot(labels: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), n).float()


def _image_data(name, xtr, ltr, xte, lte, n_classes, normalize, mean, std, flatten):
    xtr = xtr.float().div_(255.0)
    xte = xte.float().div_(255.0)
    if normalize == "standard":
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        xtr, xte = (xtr - m) / s, (xte - m) / s
    elif normalize != "unit":
        raise DataError(f"normalize={normalize!r} is not allowed; use 'standard' or 'unit'")
    if flatten:
        xtr, xte = xtr.flatten(1), xte.flatten(1)
    ltr, lte = ltr.long(), lte.long()
    return Data(name, "classification", xtr.contiguous(), _one_hot(ltr, n_classes), xte.contiguous(),
                _one_hot(lte, n_classes), ltr, lte, {"normalize": normalize})


def _load_idx(name: str, path: Path, normalize: str, flatten: bool) -> Data:
    """MNIST-format IDX files read with torchvision's MNIST/FashionMNIST classes."""
    from torchvision import datasets
    from torchvision.datasets.utils import extract_archive

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / cls.__name__ / "raw"
        raw.mkdir(parents=True)
        for rf in entry(name).files:
            try:
                extract_archive(str(path / rf.name), str(raw))
            except Exception as exc:
                raise DataError(f"{path / rf.name}: not a readable gzip IDX file ({exc})") from exc
        try:
            tr = cls(tmp, train=True, download=False)
            te = cls(tmp, train=False, download=False)
        except Exception as exc:
            raise DataError(f"{path}: not readable as {cls.__name__} IDX files ({exc})") from exc
        xtr, ltr, xte, lte = tr.data, tr.targets, te.data, te.targets
    # MNIST mean/std (f3.md §3.2); Fashion-MNIST's from its training set.
    mean, std = {"mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,))}[name]
    return _image_data(name, xtr.unsqueeze(1), ltr, xte.unsqueeze(1), lte, 10, normalize, mean, std, flatten)


def _load_cifar(name: str, path: Path, normalize: str, flatten: bool) -> Data:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]

    class _Verified(cls):  # the tarball's checksum was verified by fetch(); the batches need no re-check
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            import pickle
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tarfile.open(path / entry(name).files[0].name) as tf:
                tf.extractall(tmp, filter="data")
            tr = _Verified(tmp, train=True, download=False)
            te = _Verified(tmp, train=False, download=False)
        except Exception as exc:
            raise DataError(f"{path / entry(name).files[0].name}: not a readable CIFAR archive ({exc})") from exc
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)  # noqa: E731
    n = 10 if name == "cifar10" else 100
    mean = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}[name]
    std = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}[name]
    return _image_data(name, to_t(tr.data), torch.tensor(tr.targets), to_t(te.data), torch.tensor(te.targets),
                       n, normalize, mean, std, flatten)


# f3.md §3.3: training-split statistics (ddof=1), hard-coded in the authors' code; tests recompute them.
WINE_MEAN = [7.218837791033289, 0.3406147777563979, 0.31793534731575906, 5.407129112949779,
             0.0563923417356167, 30.5420434866269, 115.37088705022128, 0.9946949942274388,
             3.218785837983452, 0.5324995189532423, 10.49694118401642, 0.7494708485664806]
WINE_STD = [1.295744632728374, 0.16478221261798476, 0.1451796332799575, 4.7194721844136795,
            0.03548156287322057, 17.876643878598543, 56.604784167835156, 0.0029904908199930046,
            0.16036887247044962, 0.150201578211253, 1.1897982752321445, 0.43335947206804276]
WINE_TARGET = (5.825476236290167, 0.8781308165686595)
# f3.md §3.4
SGEMM_MEAN = [80.45099338, 80.33145695, 25.52218543, 13.93956954, 13.93000828, 17.37127483, 17.38451987,
              4.9973303, 2.45177463, 2.45005174, 0.49980339, 0.50042943, 0.49984478, 0.50050186]
SGEMM_STD = [42.47476047, 42.45861397, 7.85386979, 7.88287486, 7.86731171, 9.3888511, 9.39787133,
             3.00000657, 1.95446444, 1.9563342, 0.50000125, 0.50000111, 0.50000127, 0.50000104]
SGEMM_TARGET = (217.8314705220405, 369.30339822069976)


def sklearn_split(n: int, test_fraction: float = 0.2, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``sklearn.model_selection.train_test_split(range(n), test_size=f, random_state=seed)``
    (ShuffleSplit: test = first ceil(f·n) of RandomState(seed).permutation(n), train = the rest)."""
    perm = np.random.RandomState(seed).permutation(n)
    n_test = int(np.ceil(test_fraction * n))
    return perm[n_test:], perm[:n_test]


def wine_table(path: Path) -> np.ndarray:
    """Red rows then white rows, 11 features + colour code (red 0, white 1) + quality: [6497, 13]."""
    parts = []
    for colour, fname in enumerate(["winequality-red.csv", "winequality-white.csv"]):
        f = path / fname
        try:
            with open(f) as fh:
                header = fh.readline()
                a = np.loadtxt(fh, delimiter=";", dtype=np.float64, ndmin=2)
        except Exception as exc:
            raise DataError(f"{f}: not a UCI wine-quality csv ({exc})") from exc
        if header.count(";") != 11 or a.shape[1] != 12:
            raise DataError(f"{f}: expected 12 ';'-separated columns, got {a.shape[1]}")
        parts.append(np.concatenate([a[:, :11], np.full((len(a), 1), colour), a[:, 11:]], axis=1))
    return np.concatenate(parts)


def sgemm_table(path: Path) -> np.ndarray:
    """The 241,600 × 18 table of sgemm_product.csv, read straight from the UCI zip."""
    f = path / "sgemm_product_dataset.zip"
    try:
        with zipfile.ZipFile(f) as z, z.open("sgemm_product.csv") as fh:
            header = fh.readline().decode()
            a = np.loadtxt(io.TextIOWrapper(fh), delimiter=",", dtype=np.float64, ndmin=2)
    except Exception as exc:
        raise DataError(f"{f}: not the UCI SGEMM zip with sgemm_product.csv ({exc})") from exc
    if header.count(",") != 17 or a.shape[1] != 18:
        raise DataError(f"{f}: sgemm_product.csv must have 18 columns")
    return a


def _regression(name, xtr, ytr, xte, yte, xm, xs, tm, ts) -> Data:
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    xm, xs = np.asarray(xm), np.asarray(xs)
    return Data(name, "regression", f((xtr - xm) / xs), f((ytr[:, None] - tm) / ts),
                f((xte - xm) / xs), f((yte[:, None] - tm) / ts), meta={"target_mean": tm, "target_std": ts})


def _load_wine(path: Path) -> Data:
    t = wine_table(path)
    tr, te = sklearn_split(len(t))
    return _regression("wine_quality", t[tr, :12], t[tr, 12], t[te, :12], t[te, 12], WINE_MEAN, WINE_STD,
                       *WINE_TARGET)


def sgemm_melt(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sample per (configuration, run): run-major order like ``pandas.melt``."""
    x = np.tile(rows[:, :14], (4, 1))
    y = rows[:, 14:18].T.reshape(-1)
    return x, y


def _load_sgemm(path: Path) -> Data:
    t = sgemm_table(path)
    tr, te = sklearn_split(len(t))
    xtr, ytr = sgemm_melt(t[tr])
    xte, yte = sgemm_melt(t[te])
    return _regression("sgemm", xtr, ytr, xte, yte, SGEMM_MEAN, SGEMM_STD, *SGEMM_TARGET)


def synthetic_function(name: str, seed: int = SYNTHETIC_SEED) -> Data:
    """FFzero's synthetic regression data (ffzero.md §3): 12,000 samples x ~ U(−1, 1)^n, a random
    10,000/2,000 split, Gaussian noise of std 0.05·std(y_train) on the training targets only, and
    targets mapped to [−1, 1] with the noisy training min/max (test targets stay noise-free)."""
    g = torch.Generator().manual_seed(seed)
    n_in = entry(name).n_in
    x = torch.rand(SYNTHETIC_N, n_in, generator=g, dtype=torch.float64) * 2 - 1
    if name == "ffzero_function1":
        y = torch.sin(x[:, 0]) + torch.cos(x[:, 1])
    else:
        y = torch.exp(x[:, 0]) * torch.sin(x[:, 1]) + x[:, 2] * torch.cos(x[:, 3]) - x[:, 4] * x[:, 0]
    perm = torch.randperm(SYNTHETIC_N, generator=g)
    tr, te = perm[:SYNTHETIC_TRAIN], perm[SYNTHETIC_TRAIN:]
    ytr = y[tr] + SYNTHETIC_NOISE * y[tr].std() * torch.randn(len(tr), generator=g, dtype=torch.float64)
    lo, hi = float(ytr.min()), float(ytr.max())
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    f = lambda a: a.float().contiguous()  # noqa: E731
    return Data(name, "regression", f(x[tr]), f((ytr[:, None] - mid) / half), f(x[te]),
                f((y[te][:, None] - mid) / half), meta={"target_mean": mid, "target_std": half, "seed": seed})


def digit_regression(d: Data) -> Data:
    """MNIST-as-regression (ffzero.md §2.8): the same images, target 2(label/9 − 1/2) ∈ [−1, 1]."""
    t = lambda lab: (2.0 * (lab.float() / 9.0 - 0.5)).unsqueeze(1)  # noqa: E731
    return Data(f"{d.name}_regression", "regression", d.x_train, t(d.labels_train), d.x_test, t(d.labels_test),
                meta={**d.meta, "target_mean": 4.5, "target_std": 4.5})


@lru_cache(maxsize=8)
def _load_cached(name: str, root: str, normalize: str, flatten: bool) -> Data:
    e = entry(name)
    if e.base is not None:
        return digit_regression(_load_cached(e.base, root, normalize, flatten))
    if not e.files:
        return synthetic_function(name)
    path = Path(root) / name
    if name in ("mnist", "fashion_mnist"):
        return _load_idx(name, path, normalize, flatten)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, path, normalize, flatten)
    if name == "wine_quality":
        return _load_wine(path)
    return _load_sgemm(path)


def load(name: str, root: Path | str | None = None, normalize: str = "standard", flatten: bool = True,
         n_train: int | None = None, n_test: int | None = None, fetch_missing: bool = True) -> Data:
    """Tensors of dataset ``name`` (cached per process). ``normalize``: 'standard' (the paper's mean/std)
    or 'unit' (pixels in [0, 1]; images only). ``n_train``/``n_test``: keep the first n of each split."""
    entry(name)
    for k, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise DataError(f"{k}={v!r} must be a positive integer or null")
    if normalize not in ("standard", "unit"):
        raise DataError(f"normalize={normalize!r} is not allowed; use 'standard' or 'unit'")
    if entry(name).files or entry(name).base:
        root = _require(name, root, fetch_missing).parent
    d = _load_cached(name, str(root), normalize, bool(flatten))
    return d.subset(n_train, n_test)


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Write an IDX (ubyte) file, gzip-compressed: for tests and synthetic mirrors."""
    array = np.asarray(array, dtype=np.uint8)
    magic = bytes([0, 0, 8, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(magic + dims + array.tobytes())
