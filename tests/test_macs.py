"""MAC counter (issue #5) on a hand-counted tiny net, and against the authors' sheet."""
from repro.macs import Conv, Dense, Pool, all_counts, counts, terms


def test_hand_counted_tiny_mlp():
    # 4 -> 3 -> 2: F = 12 + 6 = 18, F1 = 12, Bk = 6, U = 18, E = 2, units = 5, |h1| = 3
    c = counts([Dense(4, 3), Dense(3, 2)], 4)
    assert c == {"BP": 18 + 6 + 18 + 2, "DTP": 36 - 12 + 2 + 36, "PEPITA": 36 + 18 + 2 + 2 * 4,
                 "FF": 2 * (18 + 18 + 5 + 5), "FTP": 36 + 18 + 2 + 2 * 2 * 3 - 12}


def test_hand_counted_tiny_cnn():
    # conv 3x3, 1->2 on 6x6 -> 4x4x2 (288 MACs), pool over 32 elements -> 2x2x2, dense 8 -> 3 (24 MACs)
    layers = [Conv(1, 2, 3, 4, 4), Pool(32), Dense(8, 3)]
    t = terms(layers, 36)
    assert (t["F"], t["F1"], t["Bk"], t["U"], t["h1"], t["goodness"]) == (288 + 32 + 24, 288, 24 + 32, 312, 32, 35)


def test_reproduces_the_sheet():
    c = all_counts()
    assert c["millions"]["fc_mnist"] == {"BP": 2.003, "DTP": 2.938, "PEPITA": 2.813, "FF": 3.745, "FTP": 2.023}
    assert c["cnn_cifar10"]["BP"] == 4_001_546 and c["cnn_mnist"]["FTP"] == 1_465_354
    assert c["cnn_cifar100"]["BP"] - c["cnn_cifar100_sheet_E10"]["BP"] == 90
    assert round(c["relative_to_bp_percent"]["fc_mnist"]["FF"], 1) == 87.0
