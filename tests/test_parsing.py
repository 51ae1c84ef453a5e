import numpy as np
import pytest

from loadgen.errors import LoadgenError
from loadgen.slo import parse_slo
from loadgen.units import parse_duration
from loadgen.workload.distributions import LengthDistribution


def test_durations():
    assert parse_duration("500ms") == pytest.approx(0.5)
    assert parse_duration("2m") == 120 and parse_duration("1.5") == 1.5 and parse_duration("250us") == 2.5e-4
    with pytest.raises(LoadgenError, match="e.g. 500ms"):
        parse_duration("soon")


def test_slo_parsing():
    assert parse_slo("ttft:500ms,tpot:50ms,e2el:10s") == {"ttft": 500, "tpot": 50, "e2el": 10000}
    for bad in ("ttft", "latency:5s", "ttft:fast", "", "ttft:0ms"):
        with pytest.raises(LoadgenError):
            parse_slo(bad)


def test_distribution_forms_and_sampling():
    rng = np.random.default_rng(0)
    assert LengthDistribution.parse("128").sample(rng, 3, 4096).tolist() == [128, 128, 128]
    u = LengthDistribution.parse("uniform:10,20").sample(rng, 10000, 4096)
    assert u.min() == 10 and u.max() == 20
    n = LengthDistribution.parse("normal:100,10").sample(rng, 20000, 4096)
    assert n.mean() == pytest.approx(100, abs=0.5)
    ln = LengthDistribution.parse("lognormal:256,1").sample(rng, 200000, 100000)
    assert ln.mean() == pytest.approx(256, rel=0.03)  # MEAN is the token mean
    assert np.median(ln) == pytest.approx(256 * np.exp(-0.5), rel=0.03)
    clipped = LengthDistribution.parse("normal:10,100").sample(rng, 1000, 50)
    assert clipped.min() >= 1 and clipped.max() <= 50


@pytest.mark.parametrize("bad", ["uniform:5", "gauss:1,2", "fixed:0", "uniform:9,3", "normal:-1,2", "x", "fixed:nan"])
def test_distribution_errors(bad):
    with pytest.raises(LoadgenError, match="bad --input-len"):
        LengthDistribution.parse(bad, "--input-len")
