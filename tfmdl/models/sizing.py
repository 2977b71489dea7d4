"""Parameter matching: scale a model's widths until it has a target parameter count.

Comparisons between architectures are only fair at a matched budget (the MDL paper
integrates its baselines "at a matched total parameter count"). `fit_to_budget`
multiplies every *size field* of a model's config by one factor ``α`` and searches
``α`` until the built model's parameter count lands within ``tolerance`` of the
target:

* size fields are the config's integer or integer-tuple fields whose names end in
  ``width``, ``hidden`` or ``units`` (``width``, ``backbone_hidden``,
  ``expert_hidden``, ``tower_hidden`` …); a config class can name its own with a
  ``SIZE_FIELDS`` class attribute. Zero-valued fields (``0`` = "same as width")
  stay zero.
* scaled integers are rounded; when the rounded value is invalid for the model
  (e.g. MDL's width must divide by its heads and tokens) the next larger valid
  value is used.
* ``count="total"`` matches all trainable parameters (embedding tables included,
  as the papers do); ``count="dense"`` matches the non-embedding part only (the
  embedding tables are fixed by the feature spec, so only this part can move).

The search brackets ``α`` geometrically, then bisects in ``log α``; it builds one
model per step (about 10–20 builds).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import tf_keras as keras

from tfmdl import config as config_lib
from tfmdl.models import cost
from tfmdl.models import registry

SIZE_SUFFIXES = ("width", "hidden", "units")
COUNTS = ("total", "dense")


class BudgetError(ValueError):
    """The target cannot be reached by scaling the model's widths."""


@dataclasses.dataclass
class Fit:
    """The result of `fit_to_budget`."""
    model: str
    params: Any                 # the chosen config dataclass
    count: int                  # its parameter count (of the matched kind)
    counts: Dict[str, int]      # {"embedding", "dense", "total"}
    target: int
    builds: int

    @property
    def relative_error(self) -> float:
        return self.count / self.target - 1.0


def size_fields(config_cls) -> List[str]:
    """The fields `fit_to_budget` scales (see module docstring)."""
    explicit = getattr(config_cls, "SIZE_FIELDS", None)
    if explicit is not None:
        return list(explicit)
    out = []
    for f in dataclasses.fields(config_cls):
        if f.name.endswith(SIZE_SUFFIXES):
            out.append(f.name)
    return out


def _scale_value(value, alpha: float, bump: int = 0):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return 0 if value == 0 else max(1, int(round(value * alpha))) + bump
    if isinstance(value, (list, tuple)):
        return [max(1, int(round(v * alpha))) + bump for v in value]
    return value


def _scaled(base: Mapping[str, Any], fields: List[str], alpha: float,
            bump: int = 0) -> Dict[str, Any]:
    out = dict(base)
    for name in fields:
        out[name] = _scale_value(base.get(name), alpha, bump)
    return out


class _Counter:
    """Builds configs (memoised) and counts their parameters."""

    def __init__(self, model: str, spec, count: str):
        self.entry = registry.get(model)
        self.spec, self.count = spec, count
        self.builds = 0
        self.cache: Dict[str, Optional[Tuple[Any, Dict[str, int]]]] = {}
        self.last_error: Optional[Exception] = None

    def __call__(self, raw: Mapping[str, Any]):
        """(params, counts) of ``raw``, or None when the model rejects it."""
        key = repr(sorted(raw.items()))
        if key not in self.cache:
            try:
                params = config_lib.dataclass_from_dict(self.entry.config_cls, dict(raw),
                                                        f"params ({self.entry.name})")
                self.builds += 1
                keras.backend.clear_session()
                built = self.entry.build(self.spec, params)
                self.cache[key] = (params, cost.parameter_counts(built))
            except ValueError as exc:   # an invalid width for this model
                self.last_error = exc
                self.cache[key] = None
        return self.cache[key]


class _Search:
    def __init__(self, counter: _Counter, target: int, tolerance: float, max_steps: int):
        self.counter, self.target, self.tolerance = counter, target, tolerance
        self.max_steps = max_steps
        self.seen: List[Tuple[float, Dict[str, Any], Any, Dict[str, int]]] = []

    def n(self, counts) -> int:
        return counts[self.counter.count]

    def done(self) -> bool:
        return bool(self.seen) and abs(self.n(self.best()[3]) / self.target - 1) <= self.tolerance

    def best(self):
        return min(self.seen, key=lambda e: abs(self.n(e[3]) / self.target - 1.0))

    def probe(self, alpha: float, make, max_bumps: int = 0) -> Optional[int]:
        """Counts ``make(alpha, bump)`` for the first bump the model accepts."""
        for bump in range(max_bumps + 1):
            raw = make(alpha, bump)
            result = self.counter(raw)
            if result is not None:
                self.seen.append((alpha, raw, *result))
                return self.n(result[1])
        return None

    def solve(self, make, max_bumps: int, lo_limit: float, hi_limit: float) -> None:
        """Brackets then bisects ``alpha`` (log space) for ``make``."""
        lo = hi = 1.0
        n = self.probe(1.0, make, max_bumps)
        if n is None:
            return
        if n < self.target:          # grow until the count passes the target
            while n < self.target and not self.done() and self.counter.builds < self.max_steps:
                lo, hi = hi, hi * 2.0
                if hi > hi_limit:
                    return
                n = self.probe(hi, make, max_bumps)
                if n is None:
                    return
        else:                        # shrink until it falls below
            while n > self.target and not self.done() and self.counter.builds < self.max_steps:
                hi, lo = lo, lo / 2.0
                if lo < lo_limit:
                    return
                n = self.probe(lo, make, max_bumps)
                if n is None:
                    return
        while not self.done() and self.counter.builds < self.max_steps and hi / lo > 1.001:
            mid = math.sqrt(lo * hi)
            n = self.probe(mid, make, max_bumps)
            if n is None:
                return
            if n < self.target:
                lo = mid
            else:
                hi = mid


def fit_to_budget(model: str, spec, target: int, params: Optional[Mapping[str, Any]] = None,
                  count: str = "total", tolerance: float = 0.05,
                  max_steps: int = 40, max_bumps: int = 48) -> Fit:
    """Scales ``model``'s size fields so its parameter count is ``target`` ± ``tolerance``.

    First all size fields move together (one factor); if the model's width
    granularity (e.g. MDL's multiple of heads and tokens) leaves the count outside
    the tolerance, each size field is then tuned on its own, starting from the
    closest coarse config (``FINE_SIZE_FIELDS`` on the config class names them,
    with the field a zero value stands for, e.g. MDL's ``token_hidden: width``).

    Args:
      model: a registered model name.
      spec: the feature spec the model is built for.
      target: the parameter budget.
      params: the base config (mapping or dataclass); its size fields are scaled.
      count: ``"total"`` or ``"dense"`` (module docstring).
      tolerance: accepted relative error (default 0.05, i.e. ±5%).
      max_steps: model builds the search may spend.
      max_bumps: larger widths tried when a rounded width is invalid.

    Returns:
      a `Fit`. Raises `BudgetError` naming the closest count reached when the
      target cannot be met (e.g. below the embedding tables' size).
    """
    if count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, got {count!r}.")
    if target < 1:
        raise ValueError(f"target_params must be positive, got {target}.")
    entry = registry.get(model)
    if params is not None and dataclasses.is_dataclass(params):
        params = config_lib.to_dict(params)
    base = dict(config_lib.to_dict(config_lib.dataclass_from_dict(
        entry.config_cls, dict(params or {}), f"params ({model})")))
    fields = [f for f in size_fields(entry.config_cls) if f in base]
    if not fields:
        raise BudgetError(f"model {model!r} has no size fields to scale (config fields "
                          f"ending in {SIZE_SUFFIXES}, or SIZE_FIELDS on its config class).")
    counter = _Counter(model, spec, count)
    # aim closer than the tolerance while builds remain; accept anything within it
    search = _Search(counter, target, tolerance / 4, max_steps)
    search.solve(lambda a, b: _scaled(base, fields, a, b), max_bumps, 1 / 256, 256)
    if not search.seen:
        raise BudgetError(f"{model}: no valid config found by scaling {fields} "
                          f"(last error: {counter.last_error}).")
    fine = getattr(entry.config_cls, "FINE_SIZE_FIELDS", None)
    fine = dict(fine) if fine is not None else {f: None for f in fields}
    for name, stands_for in fine.items():
        if search.done() or counter.builds >= max_steps:
            break
        start = dict(search.best()[1])
        if start.get(name) == 0 and stands_for:
            start[name] = start[stands_for]
        if not start.get(name):
            continue
        search.solve(lambda a, b, s=start, n=name: _scaled(s, [n], a, b), 0, 1 / 64, 64)
    _, _, p, counts = search.best()
    n = counts[count]
    if abs(n / target - 1.0) > tolerance:
        seen = [search.n(e[3]) for e in search.seen]
        raise BudgetError(
            f"{model}: cannot reach {target:,} {count} parameters within "
            f"±{tolerance:.0%} by scaling {fields}; closest: {n:,} "
            f"(seen {min(seen):,}..{max(seen):,}; embedding tables alone are "
            f"{counts['embedding']:,}).")
    return Fit(model=model, params=p, count=n, counts=counts, target=target,
               builds=counter.builds)
