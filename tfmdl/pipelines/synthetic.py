"""Synthetic multi-scenario x multi-task benchmark with known truth (docs/design.md 7).

Users and items carry latent vectors, a shared part plus a per-scenario offset
(``scenario_shift`` scales the offsets: how different the scenarios are). Each
example is drawn in a scenario from the users active there and the items exposed
there. Its task logits are

    z_k = b_{s,k} + gamma_k * (lambda_k * E + (1 - lambda_k) * F_{s,k})
          + a_k * pop_i + c_k * act_u + q_k * quality_i + bias_{u,s}
          + h_k[hour] + d_k[device]  (+ rho * relevance(query, item) for search)

with ``E = <u_s, v_s> / sqrt(r)`` a shared engagement score, ``F_{s,k} =
u_s^T M_{s,k} v_s / sqrt(r)`` a task- and scenario-specific bilinear term
(``M_{s,k} = M_k + shift * M'_{s,k}``), ``u_s = u + shift * u'_s`` and
``v_s = v + shift * v'_s``. ``b_{s,k}`` is found by bisection so that the mean
true probability in scenario s hits task k's target positive rate, and
``y_k ~ Bernoulli(sigmoid(z_k))``. An example in two scenarios (multi-hot)
averages the scenario-dependent logits of both.

Observed features are noisy views of the latents: ids, quantised projections of
the user latent (age, gender, city), item category and author (clusters), hour
and device, noisy activity / popularity / quality statistics, a behaviour
sequence sampled by affinity, per-scenario prior features (the user's
engagement bias and favourite category in each scenario) and a noisy
user-category affinity cross feature. Every example also carries the true
probability of every task (``true_<task>`` passthrough fields), so the oracle
(Bayes-optimal) metrics are exact.

Determinism: every random draw comes from a generator seeded by ``(seed, part,
chunk)``, so output does not depend on chunking across workers and the same seed
gives byte-identical files. Memory is bounded: examples are generated, encoded
and written chunk by chunk; only the eval split's labels and true probabilities
(up to ``oracle_max_rows``) are kept for the oracle metrics.

Row order (``row_order``, train split only; eval is always in generation order):

* ``shuffled`` (default): generation order. Every row draws its user, item,
  hour and device independently, so this order is already a uniform random
  order across users and hours (the search preset keeps a request's 6-14
  candidates together, as a ranking log does).
* ``by_user``: train rows sorted by user id (stable, so generation order within
  a user), written into the shards in that order, sorted within and across
  shards: the layout of a log exported grouped by user.
* ``by_time``: sorted by the ``hour`` feature, the only time-like field of an
  example (generation order itself carries no time), as a log exported by time.

The sorted orders hold the train split's encoded records (about 0.8 KB each for
``feed``) and one int64 key per row in memory before writing them, so they are
limited to ``SORTED_MAX_ROWS`` train rows (about 1.6 GB at the limit). The rows
themselves do not depend on the order: the same seed gives the same multiset of
train records and the same oracle report (apart from ``config.row_order``).

``manifest.json`` records, besides the shards, each split's label counts
(`label_stats.LabelCounts`, under ``"label_counts"``), which the output-bias
prior reads instead of counting the files again, and each split's row order
(``"row_order"``: ``"random"``, or the sorted order's name), which tells the
reader whether its shuffle buffer must be raised to mix the rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from tfmdl import metrics
from tfmdl.pipelines import example_codec as codec
from tfmdl.pipelines import spec as spec_lib

PRESETS = ("feed", "search")
SHUFFLED, BY_USER, BY_TIME = "shuffled", "by_user", "by_time"
ROW_ORDERS = (SHUFFLED, BY_USER, BY_TIME)
# Train rows a sorted row order may hold in memory (see the module docstring).
SORTED_MAX_ROWS = 2_000_000


@dataclasses.dataclass(frozen=True)
class TaskTarget:
    name: str
    rates: Tuple[float, ...]    # target positive rate per scenario
    weight_shared: float        # lambda_k: share of the shared engagement score


_FEED_TASKS = (
    TaskTarget("like", (0.023, 0.0291), 0.6),
    TaskTarget("follow", (0.0009, 0.0011), 0.3),
    TaskTarget("comment", (0.0018, 0.0015), 0.4),
    TaskTarget("dislike", (0.0004, 0.0006), 0.2),
    TaskTarget("headslideleft", (0.0135, 0.0144), 0.5),
    TaskTarget("finish", (0.2462, 0.2417), 0.7),
)
_SEARCH_TASKS = (
    TaskTarget("click", (0.12, 0.09, 0.07), 0.6),
    TaskTarget("like", (0.015, 0.012, 0.010), 0.4),
    TaskTarget("favorite", (0.006, 0.005, 0.004), 0.3),
)


@dataclasses.dataclass
class SynthConfig:
    """Sizes and knobs of the synthetic benchmark (defaults per preset)."""
    preset: str = "feed"
    train: int = 100_000
    eval: int = 20_000
    seed: int = 0
    users: Optional[int] = None
    items: Optional[int] = None
    latent_dim: int = 8
    scenario_shift: float = 0.6
    user_overlap: Optional[float] = None
    item_overlap: Optional[float] = None
    multi_scenario_fraction: float = 0.0
    seq_len: int = 10
    chunk_size: int = 8192
    records_per_shard: int = 250_000
    compression: Optional[str] = None
    oracle_max_rows: int = 2_000_000
    calibration_rows: int = 100_000
    row_order: str = SHUFFLED

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}.")
        if self.row_order not in ROW_ORDERS:
            raise ValueError(f"row_order must be one of {', '.join(ROW_ORDERS)}, "
                             f"got {self.row_order!r}.")
        if self.row_order != SHUFFLED and self.train > SORTED_MAX_ROWS:
            raise ValueError(f"row_order={self.row_order} sorts the train split in memory and "
                             f"takes at most {SORTED_MAX_ROWS:,} train rows, got "
                             f"train={self.train:,}; generate it shuffled, or in parts.")
        feed = self.preset == "feed"
        self.users = self.users or (50_000 if feed else 40_000)
        self.items = self.items or (20_000 if feed else 30_000)
        if self.user_overlap is None:
            self.user_overlap = 0.6 if feed else 0.4
        if self.item_overlap is None:
            self.item_overlap = 0.16 if feed else 0.3
        checks = {"train": self.train >= 0, "eval": self.eval >= 0,
                  "users": self.users >= 10, "items": self.items >= 10,
                  "latent_dim": self.latent_dim > 0, "scenario_shift": self.scenario_shift >= 0,
                  "user_overlap": 0 <= self.user_overlap <= 1,
                  "item_overlap": 0 <= self.item_overlap <= 1,
                  "multi_scenario_fraction": 0 <= self.multi_scenario_fraction <= 1,
                  "seq_len": self.seq_len > 0, "chunk_size": self.chunk_size > 0}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"synthetic config {key}={getattr(self, key)!r} is out of range.")

    @property
    def scenario_names(self) -> Tuple[str, ...]:
        return ("featured", "nearby") if self.preset == "feed" else ("main", "video", "lite")

    @property
    def traffic(self) -> np.ndarray:
        return np.array([0.55, 0.45]) if self.preset == "feed" else np.array([0.6, 0.3, 0.1])

    @property
    def tasks(self) -> Tuple[TaskTarget, ...]:
        return _FEED_TASKS if self.preset == "feed" else _SEARCH_TASKS


_CATEGORIES = 64
_CITIES = 100
_AGES = 8
_HOURS = 24
_DEVICES = 4


class World:
    """The latent population: users, items, authors, per-task parameters."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 0])
        r, S, K = cfg.latent_dim, len(cfg.scenario_names), len(cfg.tasks)
        U, I = cfg.users, cfg.items
        self.S, self.K, self.r = S, K, r
        shift = cfg.scenario_shift
        # items: categories -> authors -> items
        self.centroids = rng.normal(size=(_CATEGORIES, r))
        n_authors = max(I // 8, 2)
        cat_weights = 1.0 / np.arange(1, _CATEGORIES + 1) ** 0.8
        self.author_cat = rng.choice(_CATEGORIES, size=n_authors, p=cat_weights / cat_weights.sum())
        author_latent = rng.normal(size=(n_authors, r))
        self.item_author = rng.integers(0, n_authors, size=I)
        self.item_cat = self.author_cat[self.item_author]
        self.item_v = (0.7 * self.centroids[self.item_cat] + 0.4 * author_latent[self.item_author]
                       + 0.5 * rng.normal(size=(I, r)))
        self.item_v_off = shift * rng.normal(size=(S, I, r))
        self.item_logpop = rng.normal(size=I) * 1.0
        self.item_quality = rng.normal(size=I)
        self.n_authors = n_authors
        # users
        self.user_u = rng.normal(size=(U, r))
        self.user_u_off = shift * rng.normal(size=(S, U, r))
        self.user_logact = rng.normal(size=U) * 0.8
        self.user_scen_bias = 0.5 * rng.normal(size=(U, S))
        proj = rng.normal(size=(r, 2))
        age_score = self.user_u @ proj[:, 0] + 0.5 * rng.normal(size=U)
        self.user_age = np.digitize(age_score, np.quantile(age_score, np.linspace(0, 1, _AGES + 1)[1:-1]))
        self.user_gender = (self.user_u @ proj[:, 1] + 0.7 * rng.normal(size=U) > 0).astype(np.int64) + 1
        city_centroids = rng.normal(size=(_CITIES, r))
        self.user_city = np.argmax(self.user_u @ city_centroids.T + rng.gumbel(size=(U, _CITIES)), axis=1)
        # favourite category per scenario (a prior feature)
        u_s = self.user_u[None] + self.user_u_off                       # [S, U, r]
        self.user_scen_cat = np.argmax(np.einsum("sur,cr->suc", u_s, self.centroids), axis=2).T  # [U, S]
        # who is active / exposed where
        self.user_active = self._membership(rng, U, cfg.user_overlap)
        self.item_exposed = self._membership(rng, I, cfg.item_overlap)
        self.scen_users = [np.flatnonzero(self.user_active[:, s]) for s in range(S)]
        self.scen_items = [np.flatnonzero(self.item_exposed[:, s]) for s in range(S)]
        act_w = np.exp(self.user_logact)
        pop_w = np.exp(self.item_logpop)
        self.scen_user_cdf = [np.cumsum(act_w[u]) / act_w[u].sum() for u in self.scen_users]
        self.scen_item_cdf = [np.cumsum(pop_w[i]) / pop_w[i].sum() for i in self.scen_items]
        # task parameters
        self.lam = np.array([t.weight_shared for t in cfg.tasks])
        self.gamma = np.full(K, 1.1)
        self.m_task = rng.normal(size=(K, r, r)) / math.sqrt(r)
        self.m_scen = shift * rng.normal(size=(S, K, r, r)) / math.sqrt(r)
        self.a_pop = rng.uniform(0.1, 0.4, size=K)
        self.c_act = rng.uniform(0.0, 0.3, size=K)
        self.q_quality = rng.uniform(0.2, 0.6, size=K)
        self.h_hour = 0.3 * rng.normal(size=(K, _HOURS))
        self.d_device = 0.2 * rng.normal(size=(K, _DEVICES))
        self.rho = 0.6
        self.bias = np.zeros((S, K))

    def _membership(self, rng, n: int, overlap: float) -> np.ndarray:
        """[n, S] bool: in every scenario with prob ``overlap``, else in one."""
        S = self.S
        member = np.zeros((n, S), bool)
        everywhere = rng.random(n) < overlap
        member[everywhere] = True
        one = rng.choice(S, size=n, p=self.cfg.traffic)
        member[np.flatnonzero(~everywhere), one[~everywhere]] = True
        return member

    def measured_overlap(self) -> Dict[str, Dict[str, float]]:
        """Share of scenario s's users (items) also active (exposed) elsewhere."""
        out = {}
        for kind, m in (("user", self.user_active), ("item", self.item_exposed)):
            out[kind] = {}
            for s, name in enumerate(self.cfg.scenario_names):
                mine = m[:, s]
                elsewhere = m[:, np.arange(self.S) != s].any(axis=1)
                out[kind][name] = float((mine & elsewhere).sum() / max(mine.sum(), 1))
        return out


@dataclasses.dataclass
class Chunk:
    """A block of generated examples (columns) plus their true probabilities."""
    columns: Dict[str, codec.Column]
    probs: np.ndarray        # [n, K]
    labels: np.ndarray       # [n, K] int64
    scen_mask: np.ndarray    # [n, S] bool
    users: np.ndarray        # [n]
    queries: Optional[np.ndarray]
    rows: int
    hours: Optional[np.ndarray] = None   # [n] the hour feature (the by_time sort key)


def _sample(rng, cdf: np.ndarray, pool: np.ndarray, n: int) -> np.ndarray:
    idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return pool[np.minimum(idx, len(pool) - 1)]


class Generator:
    """Generates chunks of examples for one world."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.world = World(cfg)
        self.search = cfg.preset == "search"
        self._calibrate()
        self.norm = self._numeric_stats()

    # -- core draw ------------------------------------------------------------
    def _draw(self, rng, n: int, scenario: Optional[int] = None) -> dict:
        w, cfg = self.world, self.cfg
        S = w.S
        primary = (np.full(n, scenario) if scenario is not None
                   else rng.choice(S, size=n, p=cfg.traffic))
        users = np.empty(n, np.int64)
        for s in range(S):  # a loop over scenarios (2-3), not rows
            sel = np.flatnonzero(primary == s)
            users[sel] = _sample(rng, w.scen_user_cdf[s], w.scen_users[s], len(sel))
        queries = query_cat = None
        if self.search:
            # requests of 6-14 candidates sharing user, scenario, query
            sizes = rng.integers(6, 15, size=n // 6 + 2)
            req_of_row = np.repeat(np.arange(len(sizes)), sizes)[:n]
            first = np.flatnonzero(np.r_[True, req_of_row[1:] != req_of_row[:-1]])
            primary = primary[first][req_of_row]
            users = users[first][req_of_row]
            # the query targets the user's favourite category in that scenario half the time
            fav = w.user_scen_cat[users[first], primary[first]]
            rand_cat = rng.integers(0, _CATEGORIES, size=len(first))
            qcat = np.where(rng.random(len(first)) < 0.5, fav, rand_cat)
            query_cat = qcat[req_of_row]
            queries = req_of_row
        items = np.empty(n, np.int64)
        for s in range(S):
            sel = np.flatnonzero(primary == s)
            items[sel] = _sample(rng, w.scen_item_cdf[s], w.scen_items[s], len(sel))
        if self.search:
            # half the candidates come from the query's category (retrieval)
            from_cat = rng.random(n) < 0.5
            cat_items = self._items_in_category(rng, query_cat, primary)
            items = np.where(from_cat & (cat_items >= 0), cat_items, items)
        scen_mask = np.zeros((n, S), bool)
        scen_mask[np.arange(n), primary] = True
        if cfg.multi_scenario_fraction > 0 and scenario is None:
            multi = rng.random(n) < cfg.multi_scenario_fraction
            second = (primary + rng.integers(1, S, size=n)) % S
            scen_mask[np.flatnonzero(multi), second[multi]] = True
        hour = rng.integers(0, _HOURS, size=n)
        device = rng.choice(_DEVICES, size=n, p=[0.5, 0.3, 0.15, 0.05])
        logits_nobias = self._logits(users, items, scen_mask, hour, device, query_cat)
        return dict(primary=primary, users=users, items=items, scen_mask=scen_mask, hour=hour,
                    device=device, queries=queries, query_cat=query_cat, z=logits_nobias)

    def _items_in_category(self, rng, cats: np.ndarray, scen: np.ndarray) -> np.ndarray:
        w = self.world
        if not hasattr(self, "_cat_index"):
            order = np.argsort(w.item_cat, kind="stable")
            starts = np.searchsorted(w.item_cat[order], np.arange(_CATEGORIES + 1))
            self._cat_index = (order, starts)
        order, starts = self._cat_index
        lo, hi = starts[cats], starts[cats + 1]
        size = hi - lo
        pick = lo + (rng.random(len(cats)) * np.maximum(size, 1)).astype(np.int64)
        out = order[np.minimum(pick, len(order) - 1)]
        exposed = w.item_exposed[out, scen]
        return np.where((size > 0) & exposed, out, -1)

    def _logits(self, users, items, scen_mask, hour, device, query_cat) -> np.ndarray:
        """Task logits without the calibration bias b_{s,k}: [n, K]."""
        w = self.world
        r = w.r
        counts = scen_mask.sum(axis=1).astype(np.float64)
        z = np.zeros((len(users), w.K))
        for s in range(w.S):  # a loop over the 2-3 scenarios; averaged over memberships
            sel = np.flatnonzero(scen_mask[:, s])
            if not len(sel):
                continue
            us, it = users[sel], items[sel]
            u_s = w.user_u[us] + w.user_u_off[s, us]
            v_s = w.item_v[it] + w.item_v_off[s, it]
            e = np.einsum("nr,nr->n", u_s, v_s)[:, None] / math.sqrt(r)
            m = w.m_task + w.m_scen[s]                                   # [K, r, r]
            # u^T M_k v for every task k: [n, K]
            f = np.einsum("nkq,nq->nk", np.einsum("nr,krq->nkq", u_s, m), v_s) / math.sqrt(r)
            z_s = w.gamma * (w.lam * e + (1 - w.lam) * f) + w.user_scen_bias[us, s][:, None]
            z[sel] += z_s / counts[sel][:, None]
        z += (w.a_pop * w.item_logpop[items][:, None] + w.c_act * w.user_logact[users][:, None]
              + w.q_quality * w.item_quality[items][:, None])
        z += w.h_hour[:, hour].T + w.d_device[:, device].T
        if query_cat is not None:
            rel = np.einsum("nr,nr->n", w.centroids[query_cat], w.item_v[items]) / math.sqrt(r)
            z += w.rho * rel[:, None]
        return z

    def _bias_of(self, scen_mask: np.ndarray) -> np.ndarray:
        counts = scen_mask.sum(axis=1, keepdims=True)
        return (scen_mask @ self.world.bias) / counts

    # -- calibration and feature statistics --------------------------------------
    def _calibrate(self) -> None:
        """Bisection on b_{s,k} so the mean true probability hits each target."""
        w, cfg = self.world, self.cfg
        self._cal = []
        for s in range(w.S):
            rng = np.random.default_rng([cfg.seed, 1, s])
            d = self._draw(rng, cfg.calibration_rows, scenario=s)
            self._cal.append(d)
            for k, task in enumerate(cfg.tasks):
                target = task.rates[s]
                lo, hi = -30.0, 30.0
                for _ in range(60):
                    mid = 0.5 * (lo + hi)
                    if _sigmoid(d["z"][:, k] + mid).mean() < target:
                        lo = mid
                    else:
                        hi = mid
                w.bias[s, k] = 0.5 * (lo + hi)

    def _numeric_stats(self) -> Dict[str, Tuple[float, float]]:
        rng = np.random.default_rng([self.cfg.seed, 2])
        pooled = [self._features(rng, d, 0) for d in self._cal]
        stats = {}
        for name in self.numeric_features():
            v = np.concatenate([np.asarray(c[name].values, np.float64) for c in pooled])
            stats[name] = (round(float(v.mean()), 4), round(float(v.std()) or 1.0, 4))
        return stats

    # -- observed features ---------------------------------------------------
    def numeric_features(self) -> List[str]:
        names = ["user_activity", "item_popularity", "item_ctr", "user_cat_affinity"]
        names += [f"user_prior_{s}" for s in self.cfg.scenario_names]
        if self.search:
            names.append("query_item_match")
        return names

    def _features(self, rng, d: dict, chunk_offset: int) -> Dict[str, codec.Column]:
        w, cfg = self.world, self.cfg
        n = len(d["users"])
        u, i = d["users"], d["items"]
        r = w.r
        col = codec.Column
        cols = {
            "user_id": col("int64", u), "item_id": col("int64", i),
            "author_id": col("int64", w.item_author[i]),
            "item_category": col("int64", w.item_cat[i]),
            "user_age": col("int64", w.user_age[u]), "user_gender": col("int64", w.user_gender[u]),
            "user_city": col("int64", w.user_city[u]),
            "hour": col("int64", d["hour"]), "device": col("int64", d["device"]),
            "user_activity": col("float32", (w.user_logact[u] + 0.3 * rng.normal(size=n)).astype(np.float32)),
            "item_popularity": col("float32", np.log1p(np.exp(w.item_logpop[i] + 2.0)
                                                      * rng.gamma(4.0, 0.25, size=n)).astype(np.float32)),
            "item_ctr": col("float32", (_sigmoid(w.item_quality[i] - 2.0)
                                        + 0.02 * rng.normal(size=n)).astype(np.float32)),
            "user_cat_affinity": col("float32", (np.einsum("nr,nr->n", w.user_u[u], w.centroids[w.item_cat[i]])
                                                 / math.sqrt(r) + 0.5 * rng.normal(size=n)).astype(np.float32)),
        }
        for s, name in enumerate(cfg.scenario_names):
            cols[f"user_prior_{name}"] = col("float32", (w.user_scen_bias[u, s]
                                                         + 0.3 * rng.normal(size=n)).astype(np.float32))
            cols[f"user_fav_cat_{name}"] = col("int64", w.user_scen_cat[u, s])
        # behaviour sequence: Gumbel top-L over a random pool of exposed items by affinity
        pool_size = 4 * cfg.seq_len
        pool = rng.integers(0, cfg.items, size=(n, pool_size))
        aff = np.einsum("nr,npr->np", w.user_u[u], w.item_v[pool]) / math.sqrt(r)
        top = np.argsort(-(1.5 * aff + rng.gumbel(size=aff.shape)), axis=1)[:, :cfg.seq_len]
        lengths = rng.integers(max(cfg.seq_len // 3, 1), cfg.seq_len + 1, size=n)
        cols["hist_items"] = col("int64", np.take_along_axis(pool, top, axis=1), lengths)
        scen_ids, scen_len = self._scenario_column(d["scen_mask"], d["primary"])
        cols["scenario_id"] = col("int64", scen_ids, scen_len)
        if self.search:
            rel = np.einsum("nr,nr->n", w.centroids[d["query_cat"]], w.item_v[i]) / math.sqrt(r)
            cols["query_category"] = col("int64", d["query_cat"])
            cols["query_item_match"] = col("float32", (rel + 0.5 * rng.normal(size=n)).astype(np.float32))
            cols["query_id"] = col("int64", d["queries"] + chunk_offset)
        return cols

    def _scenario_column(self, scen_mask: np.ndarray, primary: np.ndarray):
        if not self.multi_valued:
            return primary.astype(np.int64), None
        n, S = scen_mask.shape
        # primary first, then the other scenarios the instance belongs to, then padding
        ids = np.broadcast_to(np.arange(S), (n, S))
        key = np.where(ids == primary[:, None], -1, np.where(scen_mask, ids, S + ids))
        order = np.argsort(key, axis=1, kind="stable")
        return np.take_along_axis(ids, order, axis=1).astype(np.int64), scen_mask.sum(axis=1)

    @property
    def multi_valued(self) -> bool:
        return self.cfg.multi_scenario_fraction > 0

    def chunk(self, part: int, index: int, rows: int) -> Chunk:
        """Examples ``[index * chunk_size, ...)`` of a part (1 = train, 2 = eval)."""
        rng = np.random.default_rng([self.cfg.seed, 10 + part, index])
        d = self._draw(rng, rows)
        z = d["z"] + self._bias_of(d["scen_mask"])
        probs = _sigmoid(z)
        labels = (rng.random(probs.shape) < probs).astype(np.int64)
        cols = self._features(rng, d, chunk_offset=(part << 40) + index * (rows + 1))
        for k, task in enumerate(self.cfg.tasks):
            cols[f"label_{task.name}"] = codec.Column("int64", labels[:, k])
            cols[f"true_{task.name}"] = codec.Column("float32", probs[:, k].astype(np.float32))
        queries = cols["query_id"].values if self.search else None
        return Chunk(cols, probs.astype(np.float32), labels, d["scen_mask"], d["users"],
                     queries, rows, hours=d["hour"])

    # -- spec --------------------------------------------------------------------
    def spec_dict(self) -> dict:
        cfg, w = self.cfg, self.world
        names = cfg.scenario_names

        def cat(name, buckets, dim, **kw):
            return dict(name=name, type="categorical", dtype="int64", num_buckets=int(buckets),
                        embedding_dim=dim, **kw)

        def num(name, kind="zscore"):
            mean, std = self.norm[name]
            return dict(name=name, type="numeric", default=0.0,
                        normalization={"kind": "zscore", "mean": mean, "std": std})

        features = [
            cat("user_id", cfg.users, 16), cat("item_id", cfg.items, 16),
            cat("author_id", w.n_authors, 8), cat("item_category", _CATEGORIES, 8),
            cat("user_age", _AGES, 4, default=-1), cat("user_gender", 3, 4, default=0),
            cat("user_city", _CITIES, 4, default=-1),
            cat("hour", _HOURS, 4), cat("device", _DEVICES, 4, default=-1),
            num("user_activity"), num("item_popularity"), num("item_ctr"), num("user_cat_affinity"),
            dict(name="hist_items", type="sequence", dtype="int64", shared_table="item_id",
                 max_len=cfg.seq_len, pooling="mean"),
        ]
        for s in names:
            features.append(num(f"user_prior_{s}"))
            features.append(dict(name=f"user_fav_cat_{s}", type="categorical", dtype="int64",
                                 shared_table="item_category", default=-1))
        groups = {
            "user": ["user_id", "user_age", "user_gender", "user_city", "user_activity"],
            "item": ["item_id", "author_id", "item_category", "item_popularity", "item_ctr"],
            "context": ["hour", "device"],
            "sequence": ["hist_items"],
            "cross": ["user_cat_affinity"],
            "scenario_prior": [f"user_prior_{s}" for s in names] + [f"user_fav_cat_{s}" for s in names],
        }
        passthrough = [dict(name=f"true_{t.name}", dtype="float32") for t in cfg.tasks]
        group_keys = {"user": "user_id"}
        task_related = {
            "like": ["item_category", "author_id"], "follow": ["author_id", "user_city"],
            "comment": ["item_category", "user_age"], "dislike": ["item_category", "user_gender"],
            "headslideleft": ["item_category", "device"], "finish": ["item_category", "hour"],
            "click": ["item_category", "query_category"], "favorite": ["item_category", "user_age"],
        }
        if self.search:
            features += [cat("query_category", _CATEGORIES, 8),
                         num("query_item_match")]
            groups["query"] = ["query_category", "query_item_match"]
            passthrough.append(dict(name="query_id", dtype="int64"))
            group_keys["query"] = "query_id"
            task_related["like"] = ["author_id", "item_category"]
        return {
            "name": cfg.preset,
            "scenario": {"feature": "scenario_id", "names": list(names),
                         "multi_valued": self.multi_valued},
            "tasks": [{"name": t.name, "label": f"label_{t.name}"} for t in cfg.tasks],
            "features": features,
            "passthrough": passthrough,
            "group_keys": group_keys,
            "semantic_groups": groups,
            "feature_sets": {
                "extra_embedding": ["user_id", "item_id"],
                "scenario_prior": {**{s: [f"user_prior_{s}", f"user_fav_cat_{s}"] for s in names},
                                   "global": ["user_activity"]},
                "task_related": {t.name: task_related[t.name] for t in cfg.tasks},
                "domain_specific": ["user_id", "item_id"],
            },
        }


def _nan_to_none(value):
    """Undefined metrics (one class in a slice) become JSON null, not NaN."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclasses.dataclass
class SynthResult:
    out_dir: str
    spec: spec_lib.FeatureSpec
    oracle: dict
    seconds: float
    rows: int
    peak_worker_rss_mb: Optional[float] = None  # largest generator worker (workers > 1)

    @property
    def examples_per_second(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


class _OracleAccumulator:
    """Keeps eval labels and true probabilities (bounded) and train rate sums."""

    def __init__(self, gen: Generator):
        self.gen = gen
        self.max_rows = gen.cfg.oracle_max_rows
        self.parts: List[Chunk] = []
        self.rows = 0
        S, K = gen.world.S, gen.world.K
        self.pos = np.zeros((S, K))
        self.prob = np.zeros((S, K))
        self.count = np.zeros(S)

    def add_train(self, c: Chunk) -> None:
        m = c.scen_mask.astype(np.float64)
        self.pos += m.T @ c.labels
        self.prob += m.T @ c.probs
        self.count += m.sum(axis=0)

    def add_eval(self, c: Chunk) -> None:
        if self.rows >= self.max_rows:
            return
        keep = min(c.rows, self.max_rows - self.rows)
        self.parts.append(Chunk({}, c.probs[:keep], c.labels[:keep], c.scen_mask[:keep],
                                c.users[:keep], None if c.queries is None else c.queries[:keep],
                                keep))
        self.rows += keep

    def report(self) -> dict:
        cfg = self.gen.cfg
        names = list(cfg.scenario_names)
        tasks = [t.name for t in cfg.tasks]
        out = {"preset": cfg.preset, "seed": cfg.seed, "config": dataclasses.asdict(cfg),
               "overlap": self.gen.world.measured_overlap()}
        rates = {}
        for s, sname in enumerate(names):
            rates[sname] = {}
            for k, t in enumerate(cfg.tasks):
                n = max(self.count[s], 1)
                rates[sname][t.name] = {"target": t.rates[s],
                                        "label_rate": float(self.pos[s, k] / n),
                                        "mean_true_prob": float(self.prob[s, k] / n)}
        out["train_positive_rates"] = rates
        if self.rows:
            cat = lambda f: np.concatenate([f(p) for p in self.parts])  # noqa: E731
            labels, probs = cat(lambda p: p.labels), cat(lambda p: p.probs)
            scen = cat(lambda p: p.scen_mask).astype(np.int64)
            users = cat(lambda p: p.users)
            queries = cat(lambda p: p.queries) if self.gen.search else None
            out["eval_rows_scored"] = int(self.rows)
            out["oracle"] = metrics.slice_table(
                labels, probs, scen, tasks, names, user_ids=users, query_ids=queries,
                metrics=("auc", "gauc", "qauc", "logloss", "pos_rate", "count")
                if queries is not None else ("auc", "gauc", "logloss", "pos_rate", "count"))
        return out


_WORKER: Optional[Generator] = None


def _worker_init(cfg: SynthConfig) -> None:
    global _WORKER
    _WORKER = Generator(cfg)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MiB.

    VmHWM belongs to the address space, so a spawned worker reports its own peak,
    not the parent's image it was forked from (``ru_maxrss`` of children does).
    """
    try:
        with open("/proc/self/status", "r", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # pylint: disable=g-import-not-at-top

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_chunk(job: Tuple[int, int, int]) -> Tuple[List[bytes], Chunk, float]:
    part, index, rows = job
    c = _WORKER.chunk(part, index, rows)
    records = codec.encode_examples(c.columns, rows)
    c.columns = {}
    return records, c, peak_rss_mb()


def _jobs(cfg: SynthConfig, part: int, total: int):
    for index in range(math.ceil(total / cfg.chunk_size)):
        yield part, index, min(cfg.chunk_size, total - index * cfg.chunk_size)


def _bounded_imap(pool, jobs, window: int):
    """Ordered results with at most ``window`` chunks in flight (bounded memory)."""
    import collections  # pylint: disable=g-import-not-at-top

    pending = collections.deque()
    for job in jobs:
        pending.append(pool.apply_async(_worker_chunk, (job,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _sort_key(c: Chunk, row_order: str) -> np.ndarray:
    return c.users if row_order == BY_USER else c.hours


def generate(cfg: SynthConfig, out_dir: str, workers: int = 0,
             progress: Optional[Callable[[str, int, int], None]] = None) -> SynthResult:
    """Writes spec.yaml, train-*/eval-* shards, manifest.json and oracle.json.

    ``workers`` > 1 generates and encodes chunks in that many processes (results
    are written in chunk order, so the output is identical); 0 picks
    ``min(2, cpu count)`` for large runs and 1 (in-process) for small ones.
    ``cfg.row_order`` other than ``shuffled`` sorts the train split before
    writing it (module docstring).
    """
    from tfmdl.pipelines import label_stats  # pylint: disable=g-import-not-at-top
    from tfmdl.pipelines import tfrecord  # pylint: disable=g-import-not-at-top

    start = time.perf_counter()
    global _WORKER
    _WORKER = gen = Generator(cfg)
    spec = spec_lib.FeatureSpec.from_dict(gen.spec_dict())
    os.makedirs(out_dir, exist_ok=True)
    acc = _OracleAccumulator(gen)
    splits, counts = {}, {}
    if workers <= 0:
        big = cfg.train + cfg.eval >= 16 * cfg.chunk_size
        workers = min(2, os.cpu_count() or 1) if big else 1
    pool = None
    peak_worker = 0.0
    if workers > 1:
        import multiprocessing  # pylint: disable=g-import-not-at-top

        # spawn, not fork: the parent may hold TensorFlow threads
        pool = multiprocessing.get_context("spawn").Pool(workers, _worker_init, (cfg,))
    try:
        for part, (split, total) in enumerate((("train", cfg.train), ("eval", cfg.eval)), 1):
            jobs = _jobs(cfg, part, total)
            results = (_bounded_imap(pool, jobs, 2 * workers) if pool
                       else map(_worker_chunk, jobs))
            sort = split == "train" and cfg.row_order != SHUFFLED
            held: List[List[bytes]] = []
            keys: List[np.ndarray] = []
            split_counts = label_stats.LabelCounts(spec.task_names, spec.scenario.names)
            with tfrecord.ShardedWriter(out_dir, split, cfg.records_per_shard,
                                        cfg.compression) as writer:
                done = 0
                for records, c, worker_rss in results:
                    peak_worker = max(peak_worker, worker_rss)
                    if sort:
                        held.append(records)
                        keys.append(_sort_key(c, cfg.row_order))
                    else:
                        writer.write(records)
                    # synthetic labels are always 0 or 1 (never missing)
                    split_counts.add(c.labels, c.scen_mask)
                    (acc.add_train if split == "train" else acc.add_eval)(c)
                    done += c.rows
                    if progress:
                        progress(split, done, total)
                if sort and held:
                    flat = [r for records in held for r in records]
                    held = []
                    order = np.argsort(np.concatenate(keys), kind="stable")
                    writer.write(flat[i] for i in order)
                splits[split] = writer.close()
            counts[split] = split_counts.to_dict()
    finally:
        if pool is not None:
            pool.terminate()
    report = acc.report()
    spec_lib.save_spec(spec, os.path.join(out_dir, "spec.yaml"))
    tfrecord.atomic_write_text(os.path.join(out_dir, "oracle.json"),
                               json.dumps(_nan_to_none(report), indent=2, sort_keys=True,
                                          allow_nan=False) + "\n")
    # generation order is random; the sorted train orders are named for the reader
    order = {"train": tfrecord.RANDOM_ORDER if cfg.row_order == SHUFFLED else cfg.row_order,
             "eval": tfrecord.RANDOM_ORDER}
    tfrecord.write_manifest(out_dir, splits, extra={label_stats.MANIFEST_KEY: counts,
                                                    tfrecord.ROW_ORDER_KEY: order})
    seconds = time.perf_counter() - start
    return SynthResult(out_dir, spec, report, seconds, cfg.train + cfg.eval,
                       peak_worker_rss_mb=peak_worker if workers > 1 else None)
