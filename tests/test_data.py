"""Loaders on tiny synthetic files in the real formats; checksums; mirror; offline error; real splits."""
import dataclasses
import hashlib
import io
import pickle
import tarfile
import urllib.request
import zipfile

import numpy as np
import pytest
import torch

from repro import data
from repro.data import ChecksumError, DataError, DataUnavailable


def md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def register_synthetic(monkeypatch, name, folder):
    """Point the registry entry of ``name`` at the synthetic files in ``folder`` (their checksums)."""
    e = data.REGISTRY[name]
    files = tuple(dataclasses.replace(rf, md5=md5(folder / rf.name), sha256=None, size=None,
                                      urls=("http://127.0.0.1:9/" + rf.name,)) for rf in e.files)
    monkeypatch.setitem(data.REGISTRY, name, dataclasses.replace(e, files=files))
    data._load_cached.cache_clear()


def make_idx(folder, n_train=20, n_test=10):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    data.write_idx_gz(folder / "train-images-idx3-ubyte.gz", rng.randint(0, 256, (n_train, 28, 28)))
    data.write_idx_gz(folder / "train-labels-idx1-ubyte.gz", rng.randint(0, 10, n_train))
    data.write_idx_gz(folder / "t10k-images-idx3-ubyte.gz", rng.randint(0, 256, (n_test, 28, 28)))
    data.write_idx_gz(folder / "t10k-labels-idx1-ubyte.gz", rng.randint(0, 10, n_test))


def make_cifar(folder, name="cifar10", n=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    sub = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    key = "labels" if name == "cifar10" else "fine_labels"
    ncls = 10 if name == "cifar10" else 100
    files = {}
    if name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        names = ["train", "test"]
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    for nm in names:
        files[nm] = {"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8), key: list(rng.randint(0, ncls, n))}
    files[meta[0]] = meta[1]
    tar = folder / data.REGISTRY[name].files[0].name
    with tarfile.open(tar, "w:gz") as tf:
        for nm, obj in files.items():
            b = pickle.dumps(obj, protocol=2)
            ti = tarfile.TarInfo(f"{sub}/{nm}")
            ti.size = len(b)
            tf.addfile(ti, io.BytesIO(b))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_loader_on_synthetic_files(tmp_path, monkeypatch, name):
    make_idx(tmp_path / name)
    register_synthetic(monkeypatch, name, tmp_path / name)
    d = data.load(name, root=tmp_path, fetch_missing=False)
    assert d.x_train.shape == (20, 784) and d.x_test.shape == (10, 784)
    assert d.y_train.shape == (20, 10) and torch.equal(d.y_train.argmax(1), d.labels_train)
    u = data.load(name, root=tmp_path, normalize="unit", flatten=False, fetch_missing=False)
    assert u.x_train.shape == (20, 1, 28, 28) and 0 <= float(u.x_train.min()) and float(u.x_train.max()) <= 1


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader_on_synthetic_pickles(tmp_path, monkeypatch, name):
    make_cifar(tmp_path / name, name)
    register_synthetic(monkeypatch, name, tmp_path / name)
    d = data.load(name, root=tmp_path, fetch_missing=False, flatten=False)
    n_tr = 20 if name == "cifar10" else 4
    assert d.x_train.shape == (n_tr, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.y_train.shape[1] == (10 if name == "cifar10" else 100)


def test_wine_loader_on_synthetic_csv(tmp_path, monkeypatch):
    f = tmp_path / "wine_quality"
    f.mkdir()
    header = '"fixed acidity";"volatile acidity";"citric acid";"residual sugar";"chlorides";"free sulfur dioxide";' \
             '"total sulfur dioxide";"density";"pH";"sulphates";"alcohol";"quality"\n'
    rng = np.random.RandomState(0)
    for fn, n in (("winequality-red.csv", 7), ("winequality-white.csv", 13)):
        rows = "\n".join(";".join(f"{v:.3f}" for v in rng.rand(11)) + f";{rng.randint(3, 9)}" for _ in range(n))
        (f / fn).write_text(header + rows + "\n")
    register_synthetic(monkeypatch, "wine_quality", f)
    d = data.load("wine_quality", root=tmp_path, fetch_missing=False)
    assert d.x_train.shape == (16, 12) and d.x_test.shape == (4, 12) and d.task == "regression"
    t = data.wine_table(f)
    assert (t[:7, 11] == 0).all() and (t[7:, 11] == 1).all()  # red first, colour code 0


def test_sgemm_loader_on_synthetic_zip(tmp_path, monkeypatch):
    f = tmp_path / "sgemm"
    f.mkdir()
    cols = "MWG,NWG,KWG,MDIMC,NDIMC,MDIMA,NDIMB,KWI,VWM,VWN,STRM,STRN,SA,SB,Run1 (ms),Run2 (ms),Run3 (ms),Run4 (ms)"
    rng = np.random.RandomState(0)
    rows = "\n".join(",".join(str(v) for v in rng.randint(1, 100, 18)) for _ in range(10))
    with zipfile.ZipFile(f / "sgemm_product_dataset.zip", "w") as z:
        z.writestr("sgemm_product.csv", cols + "\n" + rows + "\n")
        z.writestr("Readme.txt", "synthetic")
    register_synthetic(monkeypatch, "sgemm", f)
    d = data.load("sgemm", root=tmp_path, fetch_missing=False)
    assert d.x_train.shape == (32, 14) and d.x_test.shape == (8, 14)  # 8/2 configurations, 4 runs each


def test_mirror_is_used_and_corrupt_file_rejected(tmp_path, monkeypatch):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    make_idx(mirror / "mnist")
    register_synthetic(monkeypatch, "mnist", mirror / "mnist")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    data.fetch("mnist", root=root, mirror=mirror)
    good = (root / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    # a corrupt mirror copy is rejected with an error naming the file, and never replaces a good copy
    (mirror / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"corrupt")
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged local copy")
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz"):
        data.fetch("mnist", root=root, mirror=mirror)
    assert not list((root / "mnist").glob("*.part"))
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(good)
    data.fetch("mnist", root=root, mirror=mirror)  # good local copy: mirror not consulted
    assert (root / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes() == good


def test_download_with_bad_checksum_is_rejected(tmp_path, monkeypatch):
    make_idx(tmp_path / "src")
    register_synthetic(monkeypatch, "mnist", tmp_path / "src")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not the file"))
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz"):
        data.fetch("mnist", root=tmp_path / "root", mirror=None)
    assert not any((tmp_path / "root" / "mnist").iterdir())


def test_offline_without_mirror_names_dataset_url_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(DataUnavailable) as ei:
        data.fetch("cifar10", root=tmp_path)
    msg = str(ei.value)
    assert "cifar10" in msg and "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert data.MIRROR_ENV in msg and "\n" not in msg


def test_bad_arguments_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="dataset='imagenet'"):
        data.load("imagenet")
    with pytest.raises(DataError, match="normalize="):
        data.load("mnist", normalize="zscore", root=tmp_path, fetch_missing=False)
    with pytest.raises(DataError, match="n_train="):
        data.load("mnist", n_train=0, root=tmp_path, fetch_missing=False)
    with pytest.raises(DataUnavailable, match="python -m repro fetch mnist"):
        data.load("mnist", root=tmp_path, fetch_missing=False)


def test_sklearn_split_reference_indices():
    tr, te = data.sklearn_split(6497)
    assert (len(tr), len(te)) == (5197, 1300)
    assert list(te[:5]) == [3772, 6009, 3464, 1518, 3761] and list(tr[:5]) == [4152, 931, 4252, 1743, 1238]
    tr, te = data.sklearn_split(241600)
    assert (len(tr), len(te)) == (193280, 48320)
    assert list(te[:3]) == [106120, 128737, 123689] and list(tr[:2]) == [200961, 145488]


# ---- real data from the mirror (skipped where there is none)
def test_wine_split_reproduces_the_authors_constants(mirror, tmp_path):
    data.fetch("wine_quality", root=tmp_path, mirror=mirror)
    t = data.wine_table(tmp_path / "wine_quality")
    tr, _ = data.sklearn_split(len(t))
    np.testing.assert_allclose(t[tr, :12].mean(0), data.WINE_MEAN, rtol=1e-12)
    np.testing.assert_allclose(t[tr, :12].std(0, ddof=1), data.WINE_STD, rtol=1e-12)
    np.testing.assert_allclose([t[tr, 12].mean(), t[tr, 12].std(ddof=1)], data.WINE_TARGET, rtol=1e-12)


def test_sgemm_split_reproduces_the_authors_constants(mirror, tmp_path):
    data.fetch("sgemm", root=tmp_path, mirror=mirror)
    t = data.sgemm_table(tmp_path / "sgemm")
    assert t.shape == (241600, 18)
    tr, te = data.sklearn_split(len(t))
    np.testing.assert_allclose(t[tr, :14].mean(0), data.SGEMM_MEAN, rtol=1e-7)
    np.testing.assert_allclose(t[tr, :14].std(0, ddof=1), data.SGEMM_STD, rtol=1e-7)
    x, y = data.sgemm_melt(t[tr])
    assert x.shape == (773120, 14)
    np.testing.assert_allclose([y.mean(), y.std(ddof=1)], data.SGEMM_TARGET, rtol=1e-9)


def test_real_mnist_shapes(mirror, tmp_path):
    data.fetch("mnist", root=tmp_path, mirror=mirror)
    d = data.load("mnist", root=tmp_path, fetch_missing=False)
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784)
    assert abs(float(d.x_train.mean())) < 0.01 and abs(float(d.x_train.std()) - 1) < 0.01


def _fetch_in_process(args):
    root, mirror = args
    from repro import data as d
    d.fetch("wine_quality", root=root, mirror=mirror)
    return True


def test_concurrent_fetches_do_not_collide(tmp_path, mirror):
    """Sweep workers may fetch the same dataset at the same moment."""
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(4) as pool:
        assert all(pool.map(_fetch_in_process, [(str(tmp_path), str(mirror))] * 8))
    assert data.available("wine_quality", tmp_path) and not list((tmp_path / "wine_quality").glob("*.part"))


@pytest.mark.parametrize("name", ["mnist", "wine_quality", "sgemm"])
def test_registry_sizes_match_the_loaded_data(mirror, monkeypatch, name):
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    d = data.load(name)
    e = data.entry(name)
    assert (d.x_train.shape[0], d.n_in, d.n_out) == (e.n_train, e.n_in, e.n_out)
