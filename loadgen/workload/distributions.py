"""Request-length distributions parsed from short strings: fixed:N, uniform:a,b, normal:mean,std, lognormal:mean,sigma."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loadgen.errors import LoadgenError

_FORMS = "N, fixed:N, uniform:MIN,MAX, normal:MEAN,STD or lognormal:MEAN,SIGMA"


@dataclass(frozen=True)
class LengthDistribution:
    """Token counts. For lognormal, MEAN is the mean token count and SIGMA the log-space spread,
    so `lognormal:256,1` averages 256 tokens with a long right tail (mu = ln(MEAN) - SIGMA^2/2)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str, what: str = "length") -> "LengthDistribution":
        raw = str(text).strip().lower()
        kind, _, rest = raw.partition(":") if ":" in raw else ("fixed", "", raw)
        try:
            nums = [float(x) for x in rest.split(",")] if rest else []
        except ValueError:
            raise LoadgenError(f"bad {what} {text!r}: numbers expected; use {_FORMS}") from None
        arity = {"fixed": 1, "uniform": 2, "normal": 2, "lognormal": 2}
        if kind not in arity:
            raise LoadgenError(f"bad {what} {text!r}: unknown distribution {kind!r}; use {_FORMS}")
        if len(nums) != arity[kind] or not all(math.isfinite(n) for n in nums):
            raise LoadgenError(f"bad {what} {text!r}: {kind} takes {arity[kind]} number(s); use {_FORMS}")
        if kind == "fixed" and nums[0] < 1:
            raise LoadgenError(f"bad {what} {text!r}: a fixed length must be at least 1 token")
        if kind == "uniform" and not 1 <= nums[0] <= nums[1]:
            raise LoadgenError(f"bad {what} {text!r}: uniform needs 1 <= MIN <= MAX")
        if kind in ("normal", "lognormal") and (nums[0] <= 0 or nums[1] < 0):
            raise LoadgenError(f"bad {what} {text!r}: {kind} needs a positive mean and a non-negative spread")
        return cls(kind, nums[0], nums[1] if len(nums) > 1 else 0.0)

    def sample(self, rng: np.random.Generator, n: int, upper: int) -> np.ndarray:
        """n integer lengths in [1, upper]."""
        if self.kind == "fixed":
            values = np.full(n, self.a)
        elif self.kind == "uniform":
            values = rng.integers(int(self.a), int(self.b) + 1, size=n)
        elif self.kind == "normal":
            values = rng.normal(self.a, self.b, size=n)
        else:
            mu = math.log(self.a) - self.b**2 / 2
            values = rng.lognormal(mu, self.b, size=n)
        return np.clip(np.rint(values), 1, max(1, upper)).astype(np.int64)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        return f"{self.kind}:{self.a:g},{self.b:g}"
