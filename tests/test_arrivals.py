import numpy as np
import pytest

from loadgen.errors import LoadgenError
from loadgen.load.arrivals import ArrivalProcess

N = 20000


def _gaps(process: ArrivalProcess, seed: int = 7) -> np.ndarray:
    offsets = process.offsets(np.random.default_rng(seed), n=N)
    assert offsets[0] == 0 and np.all(np.diff(offsets) >= 0)
    return np.diff(offsets)


def test_poisson_mean_and_cv():
    gaps = _gaps(ArrivalProcess("poisson", 8.0))
    # mean 1/8 s; the standard error of the mean of N exponentials is (1/8)/sqrt(N): 5 sigma bounds
    assert abs(gaps.mean() - 0.125) < 5 * 0.125 / np.sqrt(N)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_burstiness_sets_cv(burstiness):
    gaps = _gaps(ArrivalProcess("gamma", 5.0, burstiness))
    assert gaps.mean() == pytest.approx(0.2, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.07)


def test_constant_and_duration():
    assert np.allclose(np.diff(ArrivalProcess("constant", 4.0).offsets(np.random.default_rng(0), n=5)), 0.25)
    times = ArrivalProcess("poisson", 50.0).offsets(np.random.default_rng(1), duration=10.0)
    assert times.max() < 10.0 and len(times) == pytest.approx(500, rel=0.15)
    assert len(ArrivalProcess("poisson", 50.0).offsets(np.random.default_rng(1), n=5, duration=100.0)) == 5


def test_same_seed_same_schedule():
    a = ArrivalProcess("poisson", 3.0).offsets(np.random.default_rng(42), n=100)
    b = ArrivalProcess("poisson", 3.0).offsets(np.random.default_rng(42), n=100)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kind,rate,b", [("poisson", -1, 1), ("poisson", 0, 1), ("weibull", 1, 1), ("gamma", 1, 0)])
def test_bad_processes(kind, rate, b):
    with pytest.raises(LoadgenError):
        ArrivalProcess(kind, rate, b)
