"""Parameter and MAC counts: published iresnet figures, an independent analytic count, and the CLI."""
import pytest

from gluonface.cli import main
from gluonface.models.flops import model_cost


def _iresnet_analytic(units, emb=512, size=112):
    """Conv/dense MACs and parameter elements of an IResNet, from the architecture description alone."""
    def conv(cin, cout, k, hout):
        return cin * cout * k * k * hout * hout, cin * cout * k * k

    def bn(c):
        return 4 * c  # gamma, beta, running mean, running var

    macs, params = conv(3, 64, 3, size)
    params += bn(64) + 64  # + PReLU slopes
    cin, h = 64, size
    for n, width in zip(units, [64, 128, 256, 512]):
        for i in range(n):
            stride = 2 if i == 0 else 1
            hout = (h - 1) // stride + 1
            m1, p1 = conv(cin, width, 3, h)
            m2, p2 = conv(width, width, 3, hout)
            macs += m1 + m2
            params += bn(cin) + p1 + bn(width) + width + p2 + bn(width)
            if stride != 1 or cin != width:
                m3, p3 = conv(cin, width, 1, hout)
                macs += m3
                params += p3 + bn(width)
            cin, h = width, hout
    flat = 512 * h * h
    macs += flat * emb
    params += bn(512) + flat * emb + emb + bn(emb)
    return macs, params


@pytest.mark.parametrize("name,units,params_m,gmacs", [
    ("iresnet50", [3, 4, 14, 3], 43.6, 6.3),
    ("iresnet100", [3, 13, 30, 3], 65.2, 12.1),
])
def test_published_iresnet_figures(name, units, params_m, gmacs):
    cost = model_cost(name)
    assert round(cost.params / 1e6, 1) == params_m
    assert round(cost.macs / 1e9, 1) == gmacs
    assert (cost.macs, cost.params) == _iresnet_analytic(units)
    assert cost.embedding_shape == (1, 512)


def test_counts_follow_size_and_embedding():
    small = model_cost("iresnet18", size=56, embedding_size=128)
    assert (small.macs, small.params) == _iresnet_analytic([2, 2, 2, 2], emb=128, size=56)
    assert small.embedding_shape == (1, 128)
    mfn = model_cost("mobilefacenet")
    assert 0.9e6 < mfn.params < 1.5e6  # "about 1 M parameters"


def test_flops_cli(capsys):
    assert main(["flops", "iresnet50"]) == 0
    out = capsys.readouterr().out
    assert "43.63 M parameters" in out and "6.31 G MACs" in out
    assert main(["flops", "no_such_net"]) == 2
    assert "iresnet50" in capsys.readouterr().err
