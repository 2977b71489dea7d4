"""Quality benchmark suite: every model trained and scored the same way.

``tfmdl benchmark quality | ablation | scaling`` (docs/benchmark_suite.md) share
this module:

* `prepare_data` generates a synthetic data set (`tfmdl.pipelines.synthetic`)
  keyed by preset, sizes and seed under a data root, or reuses it when a
  complete one with the same generator config is already there.
* A `Job` is one training run: a registered model, its config file
  (``configs/<model>_<preset>.yaml``, or the model's defaults when there is
  none), an optional parameter budget (`tfmdl.models.sizing.fit_to_budget`
  scales the config's widths to it), ``--set``-style overrides applied after
  the fit (the ablation switches), and a seed. Every job's ``training:`` section
  is replaced by the one shared `Profile` (optimizer, batch, epochs), so only
  the architecture differs between rows.
* `Suite.run` trains and evaluates the jobs in order and prints a progress line
  per job with an ETA from the elapsed time. Each finished job leaves
  ``OUT/runs/<name>/seed<k>/result.json`` (metrics, parameter counts, FLOPs)
  and ``predictions.npz`` (for the paired bootstrap); a re-run with the same
  arguments skips every job whose result has the same fingerprint (resume).
  A job killed during training resumes from its BackupAndRestore state; one
  killed after training is evaluated from its final weights.
* `summarize` turns the results into rows (mean ± std over seeds per scenario ×
  task cell, the mean over cells, the "% of the oracle gap closed") and
  `paired_bootstrap` adds AUC-difference intervals between two rows;
  `tfmdl.benchmark.report` writes them as markdown, JSON and a PNG chart.

Seeds: ``--seeds=N`` trains every row N times with seeds ``seed .. seed+N-1``
(weight initialisation and shuffling); the data set is the same for all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfmdl import config as config_lib
from tfmdl import metrics
from tfmdl.pipelines import label_stats
from tfmdl.pipelines import tfrecord

# rows whose intervals the quality table reports against the best other row
FOCUS_MODELS = ("mdl", "pmta")


def _pmta_backbone(params):
    from tfmdl.models import pmta  # pylint: disable=g-import-not-at-top

    return pmta.backbone_source(params)


# models trained with the paper's parameter warm-up: model -> its params' backbone
# source ``{"model", "params"}`` (`Suite.with_backbones`)
WARM_STARTED: Dict[str, Callable[[Any], Dict[str, Any]]] = {"pmta": _pmta_backbone}

# The ablation switches of MDL's and PMTA's Table 2, as config overrides.
# ``{feature_tokens}`` is replaced by the spec's number of semantic groups: when
# scenario / task tokens join the token mixing, the mixing keeps the full model's
# head count (T feature tokens) instead of needing a width divisible by the
# joined token count (`tfmdl.layers.mixing.TokenMixing`).
FEATURE_TOKENS = "{feature_tokens}"
ABLATIONS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "mdl": {
        "full": (),
        "no_task_tokens": ("params.no_task_tokens=true",),
        "task_interaction=mixing": ("params.task_interaction=mixing",
                                    "params.mixing_heads=" + FEATURE_TOKENS),
        "no_scenario_tokens": ("params.no_scenario_tokens=true",),
        "no_global_token": ("params.no_global_token=true",),
        "scenario_interaction=mixing": ("params.scenario_interaction=mixing",
                                        "params.mixing_heads=" + FEATURE_TOKENS),
    },
    "pmta": {
        "full": (),
        "no_tpe": ("params.no_tpe=true",),
        "fusion=mlp": ("params.fusion=mlp",),
        "no_dar": ("params.no_dar=true",),
        # the cross-task transformer's depth and width (paper: L = 2, d = 256)
        "layers=1": ("params.layers=1",),
        "width=64": ("params.width=64",),
        # a warm-started PMTA whose tables (restored and domain-specific) stay as
        # they start: do the restored tables overfit when training goes on?
        # (docs/benchmark_suite.md, "PMTA's warm-up")
        "frozen_tables": ("training.embedding_optimizer.learning_rate=1e-9",),
        # the paper's output layer alone, without the backbone tower's logit that the
        # configs keep beside it (backbone_logit: true, docs/pmta.md step 7)
        "paper_head": ("params.backbone_logit=false",),
    },
}

RESULT_JSON = "result.json"
PREDICTIONS = "predictions.npz"
FINGERPRINT = "fingerprint.json"
FITS_JSON = "fits.json"
TRAINED_JSON = "trained.json"
# cells with fewer eval positives are shown but left out of every mean
# (docs/benchmark_suite.md, "Measurable cells")
MIN_POSITIVES = 100


# Default (train, eval) sizes of the suite's synthetic data per preset
# (docs/benchmark_suite.md, "Sizes"): the eval split is large enough that every
# scenario x task cell has >= MIN_POSITIVES positives (feed's rarest cell,
# featured/dislike at a 0.04% rate, has ~130 of 600k rows); training stays at
# 100k rows so the 9-model suite converges, with the learning-rate grid, in
# about 90 minutes on 2 cores.
SUITE_SIZES = {"feed": (100_000, 600_000), "search": (100_000, 500_000)}


class BenchmarkError(ValueError):
    """The benchmark cannot run as asked; the message names the flag or file."""


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #
def parse_count(text: str, what: str = "--params") -> int:
    """``"2M"``, ``"500k"``, ``"1.5G"``, ``"1_000_000"`` -> an integer count
    (`config_lib.parse_count`, raising `BenchmarkError`)."""
    try:
        return config_lib.parse_count(text, what)
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None


def parse_rates(values: Sequence[str], what: str = "--lr_grid") -> Tuple[float, ...]:
    """``["3e-4", "1e-3"]`` -> ``(0.0003, 0.001)``, each checked positive and finite."""
    out = []
    for text in values:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise BenchmarkError(f"{what}: {text!r} is not a number.") from None
        if not (value > 0 and math.isfinite(value)):
            raise BenchmarkError(f"{what}: {text!r} must be a positive, finite rate.")
        out.append(value)
    if not out:
        raise BenchmarkError(f"{what}: give at least one learning rate.")
    return tuple(out)


def format_count(n: Optional[float]) -> str:
    """1234567 -> ``1.23M`` (None -> ``n/a``)."""
    if n is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_seconds(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def slug(name: str) -> str:
    """A directory name for a row name (``a=b`` -> ``a-b``)."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "-", name).strip("-") or "run"


def _hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_json(path: str, value: Any) -> None:
    """JSON-safe (NaN -> null) ``value`` to ``path``, atomically."""
    from tfmdl import evaluation  # pylint: disable=g-import-not-at-top

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    evaluation.write_json(path, value)


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class DataRequest:
    """Which synthetic data set a benchmark runs on.

    ``synth`` holds further `SynthConfig` fields (e.g. ``users``, ``items``,
    ``calibration_rows``); non-default ones become part of the directory name.
    """
    preset: str
    train: int
    eval: int
    seed: int = 0
    synth: Tuple[Tuple[str, Any], ...] = ()

    def config(self):
        from tfmdl.pipelines import synthetic  # pylint: disable=g-import-not-at-top

        try:
            return synthetic.SynthConfig(preset=self.preset, train=self.train, eval=self.eval,
                                         seed=self.seed, **dict(self.synth))
        except (TypeError, ValueError) as exc:
            raise BenchmarkError(f"synthetic data: {exc}") from None

    def dirname(self) -> str:
        name = f"{self.preset}_train{self.train}_eval{self.eval}_seed{self.seed}"
        extra = [(k, v) for k, v in sorted(self.synth) if v is not None]
        if extra:
            name += "_" + "_".join(f"{k}{v}" for k, v in extra)
        return slug(name)


def prepare_data(request: DataRequest, root: str,
                 log: Callable[[str], None] = print) -> str:
    """The data directory for ``request`` under ``root``: reused when a complete
    data set with the same generator config is there, else generated (into a
    temporary directory renamed into place, so a killed run leaves nothing
    half-written)."""
    from tfmdl.pipelines import synthetic  # pylint: disable=g-import-not-at-top

    cfg = request.config()
    out = os.path.join(root, request.dirname())
    want = json.loads(json.dumps(dataclasses.asdict(cfg)))
    existing = _read_json(os.path.join(out, "oracle.json"))
    if existing is not None and existing.get("config") == want and \
            os.path.exists(os.path.join(out, tfrecord.MANIFEST)):
        log(f"data: reusing {out}")
        return out
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".tmp-{os.getpid()}-{request.dirname()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"data: generating {request.preset} (train {request.train:,}, eval {request.eval:,}, "
        f"seed {request.seed}) into {out}")
    try:
        result = synthetic.generate(cfg, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    log(f"data: {result.rows:,} examples in {result.seconds:.1f} s")
    return out


# --------------------------------------------------------------------------- #
# jobs
# --------------------------------------------------------------------------- #
@dataclasses.dataclass
class Profile:
    """The one training protocol every job uses (replaces each config's
    ``training:`` section; docs/benchmark_suite.md, "The protocol"): dense
    weights with Adam at every rate of ``lr_grid``, embedding tables with
    Adagrad, the same batch size; up to ``max_epochs`` epochs with early stopping
    on the validation logloss (``patience`` epochs; the best epoch's weights are
    restored and annealed, `trainer.StopAndAnneal`), validating on a fixed,
    seeded ``validation_fraction`` of the *training* rows, never the eval split."""
    batch_size: int = 1024
    max_epochs: int = 10
    patience: int = 1
    validation_fraction: float = 0.1
    lr_grid: Tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    embedding_learning_rate: float = 0.05
    jit_compile: str = "auto"

    def __post_init__(self):
        self.lr_grid = tuple(float(v) for v in self.lr_grid)
        for key in ("batch_size", "max_epochs", "patience"):
            if getattr(self, key) < 1:
                raise BenchmarkError(f"--{key} must be >= 1, got {getattr(self, key)}.")
        if not self.lr_grid:
            raise BenchmarkError("--lr_grid: give at least one learning rate.")
        if len(set(self.lr_grid)) != len(self.lr_grid):
            raise BenchmarkError(f"--lr_grid: {list(self.lr_grid)} repeats a rate.")
        for lr in self.lr_grid + (self.embedding_learning_rate,):
            if not (lr > 0 and math.isfinite(lr)):
                raise BenchmarkError(f"learning rates must be positive and finite, got {lr}.")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise BenchmarkError(f"--validation_fraction must be in [0, 1), got "
                                 f"{self.validation_fraction}.")
        if self.validation_fraction == 0 and (len(self.lr_grid) > 1 or self.max_epochs > 1):
            raise BenchmarkError(
                "--validation_fraction=0 leaves nothing to stop early on or to choose a "
                "learning rate by (the eval split is never used for either): give a "
                "fraction, or --max_epochs=1 with a single --lr_grid rate.")
        if self.jit_compile not in ("auto", "on", "off"):
            raise BenchmarkError(f"--jit_compile must be auto, on or off, got "
                                 f"{self.jit_compile!r}.")

    @property
    def validates(self) -> bool:
        return self.validation_fraction > 0

    def training(self, seed: int, learning_rate: float) -> Dict[str, Any]:
        out = {"batch_size": self.batch_size, "epochs": self.max_epochs,
               "dense_optimizer": {"name": "adam", "learning_rate": float(learning_rate)},
               "embedding_optimizer": {"name": "adagrad",
                                       "learning_rate": self.embedding_learning_rate},
               "jit_compile": self.jit_compile, "seed": seed, "validate": self.validates}
        if self.validates:
            out["validation_fraction"] = self.validation_fraction
            out["early_stopping"] = {"metric": "val_loss", "patience": self.patience,
                                     "mode": "min"}
        return out

    def describe(self) -> str:
        grid = ", ".join(f"{v:g}" for v in self.lr_grid)
        text = (f"batch {self.batch_size}, dense Adam lr "
                + (f"{grid}" if len(self.lr_grid) == 1 else
                   f"best of {{{grid}}} by validation logloss")
                + f", embedding Adagrad lr {self.embedding_learning_rate:g}, XLA "
                f"{self.jit_compile}")
        if self.validates:
            text += (f"; up to {self.max_epochs} epoch(s), early stopping on the validation "
                     f"logloss (patience {self.patience}, best weights restored and "
                     f"annealed) over {self.validation_fraction:.0%} of the training rows")
        else:
            text += f"; {self.max_epochs} epoch(s), no validation"
        return text


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run (module docstring). ``name`` labels its row; the suite
    fills in ``learning_rate`` from the profile's grid (`Suite.run`)."""
    name: str
    model: str
    seed: int
    budget: Optional[int] = None
    overrides: Tuple[str, ...] = ()
    learning_rate: Optional[float] = None
    # params as JSON, used as they are (no config file, no sizing): a backbone row
    fixed_params: Optional[str] = None
    # name of the row whose run of the same seed (at that row's chosen rate) this
    # job is warm-started from (`Suite.with_backbones`)
    warm_start: Optional[str] = None

    @property
    def label(self) -> str:
        lr = "" if self.learning_rate is None else f", lr {self.learning_rate:g}"
        return f"{self.name} (seed {self.seed}{lr})"


def default_configs_dir() -> str:
    """``configs`` in the working directory, else the one beside the package."""
    if os.path.isdir("configs"):
        return "configs"
    import tfmdl  # pylint: disable=g-import-not-at-top

    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(tfmdl.__file__))),
                        "configs")


def check_models(models: Sequence[str]) -> List[str]:
    """Registered model names (each checked, with a suggestion for typos)."""
    from tfmdl.models import registry  # pylint: disable=g-import-not-at-top

    out = []
    for name in models:
        name = name.strip()
        if not name:
            continue
        try:
            out.append(registry.get(name).name)
        except config_lib.ConfigError as exc:
            raise BenchmarkError(f"--models: {exc}") from None
    if not out:
        raise BenchmarkError("--models: no model given.")
    if len(set(out)) != len(out):
        raise BenchmarkError(f"--models: {out} names a model twice.")
    return out


@dataclasses.dataclass
class Suite:
    """Runs jobs on one data set with one training profile (module docstring)."""
    out_dir: str
    data_dir: str
    profile: Profile = dataclasses.field(default_factory=Profile)
    configs_dir: str = dataclasses.field(default_factory=default_configs_dir)
    match: str = "total"
    tolerance: float = 0.05
    verbose: int = 0
    log: Callable[[str], None] = print
    min_positives: int = MIN_POSITIVES
    warm_start: bool = True
    # True when the user named configs_dir (--configs): a model without its
    # <model>_<preset>.yaml there is an error, not the registry's defaults
    configs_required: bool = False
    # the preset the user asked for (--preset) beside --data: must be the data's
    requested_preset: Optional[str] = None

    def __post_init__(self):
        from tfmdl.pipelines import spec as spec_lib  # pylint: disable=g-import-not-at-top

        if self.match not in ("total", "dense"):
            raise BenchmarkError(f"--match must be total or dense, got {self.match!r}.")
        if self.min_positives < 0:
            raise BenchmarkError(f"--min_positives must be >= 0, got {self.min_positives}.")
        if not os.path.isdir(self.data_dir):
            raise BenchmarkError(f"data directory {self.data_dir} does not exist.")
        self.spec = spec_lib.load_spec(self.data_dir)
        oracle = _read_json(os.path.join(self.data_dir, "oracle.json")) or {}
        self.oracle = with_ne(oracle.get("oracle"))
        self.preset = oracle.get("preset") or self.spec.name
        if self.requested_preset and self.requested_preset != self.preset:
            raise BenchmarkError(f"--preset={self.requested_preset}, but {self.data_dir} holds "
                                 f"the {self.preset!r} data; drop --preset or pass "
                                 f"{self.requested_preset} data.")
        self._defaults_logged: set = set()
        self._spec_hash = _hash(self.spec.to_yaml())
        os.makedirs(self.out_dir, exist_ok=True)
        self._fits = _read_json(os.path.join(self.out_dir, FITS_JSON)) or {}
        self.grid: List[dict] = []     # every grid run's training record (`run`)
        self.chosen: Dict[str, float] = {}   # row name -> its learning rate (`run`)
        self._rows: Dict[Tuple[str, int], Job] = {}   # (row name, seed) -> job (`run`)

    # -- configs ----------------------------------------------------------------
    def config_path(self, model: str) -> Optional[str]:
        """``configs_dir/<model>_<preset>.yaml``, or None (the registry's defaults,
        logged once per model) when it does not exist; with `configs_required` a
        missing file is a `BenchmarkError` listing the directory's configs."""
        name = f"{model}_{self.preset}.yaml"
        path = os.path.join(self.configs_dir, name)
        if os.path.exists(path):
            return path
        if self.configs_required:
            held = sorted(f for f in (os.listdir(self.configs_dir)
                                      if os.path.isdir(self.configs_dir) else [])
                          if f.endswith(".yaml"))
            raise BenchmarkError(
                f"--configs={self.configs_dir}: no {name} (a config is looked up as "
                f"<model>_<preset>.yaml, the preset of {self.data_dir} being "
                f"{self.preset!r}); the directory holds "
                f"{', '.join(held[:8]) or 'no .yaml file'}{' ...' if len(held) > 8 else ''}.")
        if model not in self._defaults_logged:
            self._defaults_logged.add(model)
            self.log(f"{model}: no {path}; using the registry's default params")
        return None

    def base_config(self, model: str) -> Tuple[Dict[str, Any], str]:
        """(``{"model", "params"}``, where it came from) for ``model``."""
        path = self.config_path(model)
        if path is None:
            return {"model": model, "params": {}}, "registry defaults"
        raw = config_lib.load_yaml(path)
        if raw.get("model") != model:
            raise BenchmarkError(f"{path}: model is {raw.get('model')!r}, expected {model!r}.")
        return {"model": model, "params": dict(raw.get("params") or {})}, path

    def fitted_params(self, job: Job) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(params, fit info) of ``job`` before its overrides: the config's params,
        scaled to the job's budget when it has one (cached in ``OUT/fits.json``)."""
        from tfmdl.models import sizing  # pylint: disable=g-import-not-at-top

        if job.fixed_params is not None:
            return json.loads(job.fixed_params), {"source": f"backbone of {job.name}",
                                                  "budget": None}
        base, source = self.base_config(job.model)
        if job.budget is None:
            return base["params"], {"source": source, "budget": None}
        key = _hash([job.model, base["params"], job.budget, self.match, self.tolerance,
                     self._spec_hash])
        cached = self._fits.get(key)
        if cached is None:
            try:
                fit = sizing.fit_to_budget(job.model, self.spec, job.budget, base["params"],
                                           count=self.match, tolerance=self.tolerance)
            except (sizing.BudgetError, ValueError) as exc:
                raise BenchmarkError(f"--params={job.budget}: {exc} (config: {source}; try "
                                     f"another budget, --match=dense or a larger "
                                     f"--tolerance)") from None
            cached = {"params": config_lib.to_dict(fit.params), "count": fit.count,
                      "counts": fit.counts, "builds": fit.builds}
            self._fits[key] = cached
            write_json(os.path.join(self.out_dir, FITS_JSON), self._fits)
            self.log(f"sized {job.model} to {format_count(job.budget)} {self.match} "
                     f"parameters: {fit.count:,} ({fit.relative_error:+.1%}) in {fit.builds} "
                     f"builds")
        return dict(cached["params"]), {"source": source, "budget": job.budget,
                                        "matched": self.match, "count": cached["count"]}

    def experiment_config(self, job: Job) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """The full config (model, params, shared training) ``job`` trains."""
        from tfmdl.models import experiment  # pylint: disable=g-import-not-at-top

        params, info = self.fitted_params(job)
        lr = self.profile.lr_grid[0] if job.learning_rate is None else job.learning_rate
        raw = {"model": job.model, "params": params,
               "training": self.profile.training(job.seed, lr)}
        from tfmdl.training import config as train_config  # pylint: disable=g-import-not-at-top

        try:
            cfg = experiment.load_config(raw, self.resolve(job.overrides)).to_dict()
            # the training section too, so that a bad override stops the suite before
            # its first run rather than at the job that carries it
            train_config.parse(cfg["training"], "", self.spec)
        except (config_lib.ConfigError, ValueError) as exc:
            raise BenchmarkError(f"{job.name}: {exc}") from None
        return cfg, info

    def resolve(self, overrides: Sequence[str]) -> List[str]:
        """``overrides`` with `FEATURE_TOKENS` replaced by the spec's group count."""
        tokens = str(len(self.spec.semantic_groups))
        return [o.replace(FEATURE_TOKENS, tokens) for o in overrides]

    # -- running ----------------------------------------------------------------
    def run_dir(self, job: Job) -> str:
        lr = "" if job.learning_rate is None else f"lr{job.learning_rate:g}"
        return os.path.join(self.out_dir, "runs", slug(job.name), lr, f"seed{job.seed}")

    def fingerprint(self, job: Job, config: Mapping[str, Any]) -> str:
        source = self.warm_start_source(job)
        fields = {k: v for k, v in dataclasses.asdict(job).items()
                  if v is not None or k not in ("fixed_params", "warm_start")}
        return _hash({"job": fields, "config": config,
                      "data": os.path.abspath(self.data_dir), "spec": self._spec_hash,
                      **({"warm_start": self._source_fingerprint(source)} if source else {})})

    # -- warm starts ----------------------------------------------------------------
    def with_backbones(self, jobs: Sequence[Job]) -> List[Job]:
        """``jobs`` with the paper's parameter warm-up for the models of
        `WARM_STARTED` (PMTA; docs/benchmark_suite.md, "PMTA's warm-up"): each such
        job starts from its backbone's run of the same seed, and that backbone (the
        ``dnn`` / ``rankmixer`` model with the job's backbone settings) becomes a row
        of its own, trained with the same protocol just before it. Without
        ``warm_start`` the jobs are returned as they are."""
        from tfmdl import config as cfg_lib  # pylint: disable=g-import-not-at-top
        from tfmdl.models import registry  # pylint: disable=g-import-not-at-top

        if not self.warm_start:
            return list(jobs)
        out: List[Job] = []
        names: Dict[str, str] = {}     # source params (JSON) -> backbone row name
        for job in jobs:
            if job.model not in WARM_STARTED or job.fixed_params is not None:
                out.append(job)
                continue
            config, _ = self.experiment_config(job)
            params = cfg_lib.dataclass_from_dict(registry.get(job.model).config_cls,
                                                 config["params"], "params")
            source = WARM_STARTED[job.model](params)
            key = json.dumps(source, sort_keys=True)
            if key not in names:
                names[key] = f"{job.name} backbone ({source['model']})"
            backbone = Job(name=names[key], model=source["model"], seed=job.seed,
                           fixed_params=json.dumps(source["params"], sort_keys=True))
            if backbone not in out:
                out.append(backbone)
            out.append(dataclasses.replace(job, warm_start=names[key]))
        return out

    def warm_start_source(self, job: Job) -> Optional[Job]:
        """The backbone run ``job`` starts from (its row's run of the same seed, at
        the row's chosen rate), or None."""
        if not job.warm_start:
            return None
        source = self._rows.get((job.warm_start, job.seed))
        if source is None or job.warm_start not in self.chosen:
            raise BenchmarkError(f"{job.label}: its backbone row {job.warm_start!r} (seed "
                                 f"{job.seed}) must run first.")
        return dataclasses.replace(source, learning_rate=self.chosen[job.warm_start])

    def _source_fingerprint(self, source: Job) -> Optional[str]:
        record = self.trained(source)
        return record["fingerprint"] if record else None

    def _current(self, job: Job, name: str, needs: Sequence[str] = ()) -> Optional[dict]:
        run_dir = self.run_dir(job)
        value = _read_json(os.path.join(run_dir, name))
        if value is None or not all(os.path.exists(os.path.join(run_dir, n)) for n in needs):
            return None
        try:
            config, _ = self.experiment_config(job)
        except BenchmarkError:
            return None
        if value.get("fingerprint") != self.fingerprint(job, config):
            return None
        if "model_dir" in value:   # where the run lives now (OUT may have been moved)
            value["model_dir"] = os.path.join(run_dir, "model")
        return value

    def finished(self, job: Job) -> Optional[dict]:
        """The saved result (trained and scored) of ``job`` when it is complete and
        current, else None."""
        return self._current(job, RESULT_JSON, (PREDICTIONS,))

    def trained(self, job: Job) -> Optional[dict]:
        """The saved training record of ``job`` when its training finished with
        the current config, else None."""
        return self._current(job, TRAINED_JSON)

    def run(self, jobs: Sequence[Job]) -> List[dict]:
        """Trains and scores every job; returns the results of ``jobs`` in order.

        Row by row (in order of first appearance), the row's first seed trains
        once per rate of the profile's ``lr_grid``; the rate whose final weights
        have the lowest validation logloss is the row's (`select_rate`), and only
        that run is scored on the eval split. The row's other seeds then train at
        that rate, after every grid. Every grid run's training record is kept in
        `grid` (for the summary JSON). A job with ``warm_start`` starts from its
        backbone row's run of the same seed, so that row must come first
        (`with_backbones` puts it there).
        """
        grid = self.profile.lr_grid
        first: Dict[str, int] = {}
        for job in jobs:
            first[job.name] = min(first.get(job.name, job.seed), job.seed)
            self._rows[(job.name, job.seed)] = job
        names = list(first)
        phase1 = {n: [dataclasses.replace(j, learning_rate=lr) for j in jobs
                      if j.name == n and j.seed == first[n] for lr in grid] for n in names}
        others = [j for j in jobs if j.seed != first[j.name]]
        for n in names:   # size every model first: budget errors show at once
            self.experiment_config(phase1[n][0])
        progress = _Progress(sum(map(len, phase1.values())) + len(others) + len(jobs),
                             self.log)
        self.grid = []
        for name in names:
            recs = [self._train(job, progress) for job in phase1[name]]
            self.chosen[name] = select_rate(recs)
            for r in recs:
                self.grid.append({**r, "selected": r["learning_rate"] == self.chosen[name]})
            if len(grid) > 1:
                self.log(f"{name}: lr {self.chosen[name]:g} has the best validation logloss "
                         + "(" + ", ".join(f"{r['learning_rate']:g}: "
                                           f"{_fmt(r.get('val_logloss'))}" for r in recs) + ")")
        results = []
        for job in jobs:   # a backbone row's seed-k run precedes the jobs it warm-starts
            job = dataclasses.replace(job, learning_rate=self.chosen[job.name])
            if job.seed != first[job.name]:
                self._train(job, progress)
            results.append(self._score(job, progress))
        return results

    def _train(self, job: Job, progress: "_Progress") -> dict:
        """Trains ``job`` (or reuses its finished training); its training record."""
        def describe(r):
            steps = "n/a" if r.get("steps") is None else f"{r['steps']:,}"
            return (f"trained {r['epochs']} epoch(s), {steps} steps, validation logloss "
                    f"{_fmt(r.get('val_logloss'))}")
        return self._step(job, progress, self.trained, self.train_one, "trained", "training",
                          describe)

    def _score(self, job: Job, progress: "_Progress") -> dict:
        """Scores ``job`` (or reuses its saved result); its result."""
        def describe(r):
            return (f"{format_count(r['counts']['total'])} params, "
                    f"{describe_result(r, self.oracle, self.min_positives)}")
        return self._step(job, progress, self.finished, self.score_one, "scored",
                          "scoring the eval split", describe)

    def _step(self, job, progress, saved, run, done, doing, describe) -> dict:
        """``saved(job)`` when it is there, else ``run(job)``, with progress lines."""
        value = saved(job)
        if value is not None:
            progress.skip(f"{job.label}: {done} earlier ({self.run_dir(job)})")
            return value
        progress.begin(f"{job.label}: {doing}")
        value = run(job)
        progress.end(f"{job.label}: {describe(value)}")
        return value

    def train_one(self, job: Job) -> dict:
        """Trains (or finishes) ``job``; writes and returns its training record:
        epochs and optimizer steps run, the early-stopping report, the validation
        logloss per epoch and of the final weights (mean over tasks)."""
        import tf_keras as keras  # pylint: disable=g-import-not-at-top

        from tfmdl.training import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top
        from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

        config, _ = self.experiment_config(job)
        fingerprint = self.fingerprint(job, config)
        run_dir = self.run_dir(job)
        model_dir = os.path.join(run_dir, "model")
        marker = _read_json(os.path.join(run_dir, FINGERPRINT))
        if marker is None or marker.get("fingerprint") != fingerprint:
            shutil.rmtree(run_dir, ignore_errors=True)   # stale: another config
            write_json(os.path.join(run_dir, FINGERPRINT), {"fingerprint": fingerprint,
                                                            "job": dataclasses.asdict(job)})
        keras.backend.clear_session()
        keras.utils.set_random_seed(job.seed)
        start, start_logloss = time.perf_counter(), None
        if model_dir_lib.has_final_weights(model_dir):   # trained, killed before the record
            summary = _read_json(model_dir_lib.path(model_dir, model_dir_lib.SUMMARY)) or {}
            seconds = summary.get("seconds")
        else:
            source = self.warm_start_source(job)
            source_dir = None
            if source is not None:
                record = self.trained(source)
                if record is None:
                    raise BenchmarkError(f"{job.label}: its backbone run {source.label} is "
                                         f"not trained.")
                source_dir = record["model_dir"]
            run = trainer.prepare(config, self.data_dir, model_dir, warm_start_from=source_dir)
            if source_dir and run.validation_data is not None:
                # where the warm start leaves the model before its first step
                # (docs/benchmark_suite.md, "PMTA's warm-up")
                logs = run.model.evaluate(run.validation_data, verbose=0, return_dict=True)
                start_logloss = float(logs["loss"]) / len(self.spec.task_names)
            history = run.fit(verbose=self.verbose)
            summary = run.finish(history)
            seconds = time.perf_counter() - start
        history = summary.get("history") or {}
        tasks = len(self.spec.task_names)
        val = [v / tasks for v in history.get("val_loss", [])]
        source = self.warm_start_source(job)
        record = {"fingerprint": fingerprint, "name": job.name, "model": job.model,
                  "seed": job.seed, "learning_rate": job.learning_rate,
                  "warm_start": None if source is None else self.run_dir(source),
                  "epochs": len(history.get("loss", [])), "steps": summary.get("steps"),
                  "early_stopping": summary.get("early_stopping"),
                  "val_logloss_per_epoch": val, "val_logloss": val[-1] if val else None,
                  "train_seconds": seconds, "model_dir": model_dir}
        if start_logloss is not None:
            record["val_logloss_at_start"] = start_logloss
        write_json(os.path.join(run_dir, TRAINED_JSON), record)
        return _json_roundtrip(record)

    def score_one(self, job: Job) -> dict:
        """Scores trained ``job`` on the eval split; writes its result."""
        import tf_keras as keras  # pylint: disable=g-import-not-at-top

        from tfmdl import evaluation  # pylint: disable=g-import-not-at-top
        from tfmdl.models import cost  # pylint: disable=g-import-not-at-top
        from tfmdl.training import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top

        record = self.trained(job)
        if record is None:
            raise BenchmarkError(f"{job.label}: not trained yet ({self.run_dir(job)}).")
        config, fit_info = self.experiment_config(job)
        run_dir = self.run_dir(job)
        keras.backend.clear_session()
        built, _ = model_dir_lib.load_trained(record["model_dir"])
        preds = evaluation.predict(built, self.spec, self.data_dir)
        table = metrics.slice_table(preds.labels, preds.preds, preds.scenarios, preds.task_names,
                                    preds.scenario_names, user_ids=preds.user_ids,
                                    query_ids=preds.query_ids, metrics=evaluation.EVAL_METRICS)
        arrays = {"preds": preds.preds.astype(np.float32),
                  "labels": preds.labels.astype(np.int8),
                  "scenarios": preds.scenarios.astype(np.int8)}
        if preds.user_ids is not None:
            arrays["user_ids"] = preds.user_ids
        if preds.query_ids is not None:
            arrays["query_ids"] = preds.query_ids
        tmp = os.path.join(run_dir, f".tmp-{os.getpid()}-{PREDICTIONS}")
        np.savez(tmp, **arrays)
        os.replace(tmp, os.path.join(run_dir, PREDICTIONS))
        result = {
            "fingerprint": record["fingerprint"], "name": job.name, "model": job.model,
            "seed": job.seed, "budget": job.budget, "overrides": self.resolve(job.overrides),
            "learning_rate": job.learning_rate, "warm_start": record.get("warm_start"),
            "backbone_row": job.fixed_params is not None,
            "config_source": fit_info["source"], "params": config["params"],
            "counts": cost.parameter_counts(built),
            "flops_per_example": cost.flops_per_example(built),
            "train_seconds": record.get("train_seconds"), "eval_rows": preds.num_rows,
            "training": {k: record.get(k) for k in ("epochs", "steps", "early_stopping",
                                                    "val_logloss", "val_logloss_per_epoch")},
            "tasks": preds.task_names, "scenarios": preds.scenario_names,
            "metrics": table, "gap_closed": gap_closed(table, self.oracle),
            "min_positives": self.min_positives, "model_dir": record["model_dir"],
        }
        write_json(os.path.join(run_dir, RESULT_JSON), result)
        return _json_roundtrip(result)


def _json_roundtrip(value: Any) -> Any:
    """``value`` as a reader of its JSON file sees it (NaN -> None, tuples -> lists)."""
    from tfmdl import evaluation  # pylint: disable=g-import-not-at-top

    return json.loads(json.dumps(evaluation.json_safe(value)))


def _fmt(value: Optional[float], pattern: str = "{:.5f}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else pattern.format(value)


def select_rate(records: Sequence[Mapping[str, Any]]) -> float:
    """The learning rate of the record with the lowest final validation logloss
    (a run without one, e.g. diverged, never wins; the first rate when none has
    one)."""
    def key(r):
        v = r.get("val_logloss")
        return (0, v) if v is not None and math.isfinite(v) else (1, 0.0)
    return min(records, key=key)["learning_rate"]


class _Progress:
    """``[i/N] label: ... | elapsed, ETA`` lines over a suite's steps (the ETA
    from the mean time of the steps run so far)."""

    def __init__(self, total: int, log: Callable[[str], None]):
        self.total, self.log = total, log
        self.index = self.ran = 0
        self.spent = 0.0
        self.started = None

    def _prefix(self) -> str:
        return f"[{self.index}/{self.total}]"

    def _eta(self) -> str:
        if not self.ran:
            return "known after the first step"
        return format_seconds(self.spent / self.ran * max(self.total - self.index, 0))

    def skip(self, text: str) -> None:
        self.index += 1
        self.log(f"{self._prefix()} {text}")

    def begin(self, text: str) -> None:
        self.index += 1
        self.started = time.perf_counter()
        self.log(f"{self._prefix()} {text} | elapsed {format_seconds(self.spent)}, "
                 f"ETA {self._eta()}")

    def end(self, text: str) -> None:
        took = time.perf_counter() - self.started
        self.spent += took
        self.ran += 1
        self.log(f"{self._prefix()} {text} ({format_seconds(took)}) | ETA {self._eta()}")


def describe_result(result: Mapping[str, Any], oracle: Optional[Mapping] = None,
                    min_positives: int = MIN_POSITIVES) -> str:
    """``mean AUC 0.7123 (61.2% of the oracle gap), mean NE 0.8123 over 10 of 12
    cells`` for a progress line (means over the measurable cells)."""
    keep = measurable(result, min_positives)
    parts = []
    for metric in result_metrics(result):
        values = _kept(cell_values(result["metrics"], result, metric), keep)
        mean = _nanmean(values)
        text = f"mean {metric.upper()} " + ("n/a" if mean is None else f"{mean:.4f}")
        gap = gap_of_means(values, _kept(cell_values(oracle, result, metric), keep)
                           if oracle else None)
        if gap is not None:
            text += f" ({gap:.1f}% of the oracle gap)"
        parts.append(text)
    ne = _nanmean(_kept(cell_values(result["metrics"], result, "ne"), keep))
    parts.append("mean NE " + ("n/a" if ne is None else f"{ne:.4f}"))
    return ", ".join(parts) + f" over {sum(keep)} of {len(keep)} cells"


# --------------------------------------------------------------------------- #
# tables
# --------------------------------------------------------------------------- #
def result_metrics(result: Mapping[str, Any]) -> List[str]:
    """The table metrics: QAUC and AUC when the data has queries, else AUC."""
    first = next(iter(next(iter(result["metrics"].values())).values()))
    return ["qauc", "auc"] if "qauc" in first else ["auc"]


def cells(result: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """(scenario, task) cells of the table, in spec order."""
    return [(s, t) for s in result["scenarios"] for t in result["tasks"]]


def cell_values(table: Mapping, result: Mapping[str, Any], metric: str) -> List[Optional[float]]:
    return [(table.get(s, {}).get(t) or {}).get(metric) for s, t in cells(result)]


def positives(result: Mapping[str, Any]) -> List[int]:
    """Eval positives per cell (`cells` order)."""
    out = []
    for s, t in cells(result):
        m = result["metrics"].get(s, {}).get(t) or {}
        if m.get("positives") is not None:
            out.append(int(m["positives"]))
        else:
            count, rate = m.get("count"), m.get("pos_rate")
            out.append(int(round(count * rate)) if count and _defined(rate) else 0)
    return out


def train_positives(data_dir: str, spec, result: Mapping[str, Any]) -> Optional[List[int]]:
    """Positives per cell (`cells` order) of the *train* split (validation hold-out
    included), from the data's manifest.json; None when it records no counts. A
    cell can have enough eval positives to be measured and still too few training
    positives for its head to learn a calibrated rate (docs/benchmark_suite.md,
    "Measurable cells")."""
    counts = label_stats.counts_in_manifest(tfrecord.read_manifest(data_dir), "train", spec)
    if counts is None:
        return None
    scenario = {s: i for i, s in enumerate(counts.scenario_names)}
    task = {t: k for k, t in enumerate(counts.task_names)}
    if any(s not in scenario or t not in task for s, t in cells(result)):
        return None
    return [int(counts.cell_positives[scenario[s], task[t]]) for s, t in cells(result)]


def measurable(result: Mapping[str, Any], min_positives: int = MIN_POSITIVES) -> List[bool]:
    """Per cell: has it at least ``min_positives`` eval positives? Only these
    cells enter the means and the "% of the oracle gap closed" (an AUC on 10
    positives is noise; docs/benchmark_suite.md, "Measurable cells")."""
    return [p >= min_positives for p in positives(result)]


def _kept(values: Sequence[Optional[float]], keep: Sequence[bool]) -> List[Optional[float]]:
    return [v for v, k in zip(values, keep) if k]


def with_ne(table: Optional[Mapping]) -> Optional[Dict[str, Any]]:
    """A slice table with each cell's normalized entropy filled in from its
    logloss and positive rate where it has none (the generator's oracle table)."""
    if not table:
        return None
    out: Dict[str, Any] = {}
    for slice_name, per_task in table.items():
        out[slice_name] = {}
        for task, values in per_task.items():
            values = dict(values)
            if "ne" not in values and _defined(values.get("logloss")) and \
                    _defined(values.get("pos_rate")):
                h = metrics.entropy(values["pos_rate"])
                values["ne"] = values["logloss"] / h if _defined(h) else None
            out[slice_name][task] = values
    return out


def gap_closed(table: Mapping, oracle: Optional[Mapping]) -> Optional[Dict[str, Any]]:
    """``(model - 0.5) / (oracle - 0.5) x 100`` per slice x task for AUC/GAUC/QAUC."""
    if not oracle:
        return None
    out: Dict[str, Any] = {}
    for slice_name, per_task in table.items():
        for task, values in per_task.items():
            cell = {}
            for metric in ("auc", "gauc", "qauc"):
                model = values.get(metric)
                ref = (oracle.get(slice_name, {}).get(task) or {}).get(metric)
                ok = model is not None and ref is not None and not (
                    math.isnan(model) or math.isnan(ref)) and ref != 0.5
                if metric in values:
                    cell[metric] = (model - 0.5) / (ref - 0.5) * 100.0 if ok else None
            out.setdefault(slice_name, {})[task] = cell
    return out


def _defined(v: Optional[float]) -> bool:
    return v is not None and not math.isnan(v)


def gap_of_means(values: Sequence[Optional[float]],
                 oracle: Optional[Sequence[Optional[float]]]) -> Optional[float]:
    """``(mean value - 0.5) / (mean oracle - 0.5) x 100`` over the cells where
    both are defined: the share of the oracle's lead over a random ranker that
    the row closes, on average over the cells. (A mean of per-cell ratios would
    be dominated by cells whose oracle is close to 0.5.)"""
    if not oracle:
        return None
    pairs = [(v, o) for v, o in zip(values, oracle) if _defined(v) and _defined(o)]
    if not pairs:
        return None
    ref = float(np.mean([o for _, o in pairs]))
    if ref == 0.5:
        return None
    return (float(np.mean([v for v, _ in pairs])) - 0.5) / (ref - 0.5) * 100.0


def _stats(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return {"mean": float(np.mean(vals)), "std": std, "n": len(vals)}


def _nanmean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


LOSS_METRICS = ("logloss", "ne")   # per-cell, lower is better; no oracle-gap figure


def summarize_row(results: Sequence[Mapping[str, Any]],
                  oracle: Optional[Mapping] = None,
                  min_positives: int = MIN_POSITIVES) -> Dict[str, Any]:
    """One table row from the runs (seeds) of one name: per metric and cell the
    mean and std over seeds; ``mean`` is the mean over the measurable cells
    (`measurable`) and ``gap`` the `gap_of_means` against ``oracle`` over the
    same cells (each per seed, then mean ± std over seeds). Metrics: the AUCs of
    `result_metrics` and `LOSS_METRICS`."""
    first = results[0]
    keep = measurable(first, min_positives)
    training = [r.get("training") or {} for r in results]
    row: Dict[str, Any] = {
        "name": first["name"], "model": first["model"], "budget": first.get("budget"),
        "overrides": first.get("overrides", []), "seeds": [r["seed"] for r in results],
        "learning_rate": first.get("learning_rate"),
        "backbone_row": bool(first.get("backbone_row")),
        "warm_start": first.get("warm_start"),
        "params": first["counts"], "flops_per_example": first.get("flops_per_example"),
        "train_seconds": _stats([r.get("train_seconds") for r in results]),
        "epochs": _stats([t.get("epochs") for t in training]),
        "val_logloss": _stats([t.get("val_logloss") for t in training]),
        "config_source": first.get("config_source"),
        "cells": {}, "mean": {}, "gap_cells": {}, "gap": {}}
    keys = [f"{s}/{t}" for s, t in cells(first)]
    for metric in list(result_metrics(first)) + list(LOSS_METRICS):
        per_seed = [cell_values(r["metrics"], r, metric) for r in results]
        row["cells"][metric] = {k: _stats([v[j] for v in per_seed]) for j, k in enumerate(keys)}
        row["mean"][metric] = _stats([_nanmean(_kept(v, keep)) for v in per_seed])
        if metric in LOSS_METRICS:
            continue
        gaps = [cell_values(r.get("gap_closed") or {}, r, metric) for r in results]
        ref = _kept(cell_values(oracle, first, metric), keep) if oracle else None
        row["gap_cells"][metric] = {k: _stats([v[j] for v in gaps]) for j, k in enumerate(keys)}
        row["gap"][metric] = _stats([gap_of_means(_kept(v, keep), ref) for v in per_seed])
    return row


def group_results(results: Sequence[Mapping[str, Any]]) -> Dict[str, List[Mapping[str, Any]]]:
    """Results by row name, in first-seen order."""
    out: Dict[str, List[Mapping[str, Any]]] = {}
    for r in results:
        out.setdefault(r["name"], []).append(r)
    return out


def oracle_row(oracle: Optional[Mapping], result: Mapping[str, Any],
               min_positives: int = MIN_POSITIVES) -> Optional[Dict[str, Any]]:
    if not oracle:
        return None
    keep = measurable(result, min_positives)
    row: Dict[str, Any] = {"name": "oracle", "cells": {}, "mean": {}}
    for metric in list(result_metrics(result)) + list(LOSS_METRICS):
        values = cell_values(oracle, result, metric)
        row["cells"][metric] = {f"{s}/{t}": {"mean": v, "std": None, "n": 1}
                                for (s, t), v in zip(cells(result), values)}
        row["mean"][metric] = {"mean": _nanmean(_kept(values, keep)), "std": None, "n": 1}
    return row


def best_baseline(rows: Sequence[Mapping[str, Any]],
                  exclude: Sequence[str] = FOCUS_MODELS,
                  metric: str = "auc") -> Optional[str]:
    """The row with the highest mean ``metric`` among rows whose model is not
    excluded (nor a warm-started model's backbone row)."""
    scored = [(r["mean"][metric]["mean"], r["name"]) for r in rows
              if r["model"] not in exclude and not r.get("backbone_row") and
              r["mean"].get(metric, {}).get("mean") is not None]
    return max(scored)[1] if scored else None


def load_predictions(result: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    path = os.path.join(os.path.dirname(result["model_dir"]), PREDICTIONS)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def paired_bootstrap(a: Mapping[str, Any], b: Mapping[str, Any], n_boot: int = 1000,
                     seed: int = 0, alpha: float = 0.05) -> Dict[str, Any]:
    """AUC(a) - AUC(b) with its paired-bootstrap (1 - alpha) interval per cell.

    ``a`` and ``b`` are run results on the same rows; the bootstrap resamples
    queries when the data has them, else users, else rows
    (`metrics.paired_bootstrap_auc`).
    """
    pa, pb = load_predictions(a), load_predictions(b)
    if pa["labels"].shape != pb["labels"].shape or not np.array_equal(pa["labels"], pb["labels"]):
        raise BenchmarkError(f"{a['model_dir']} and {b['model_dir']} were scored on different "
                             f"rows; re-run both.")
    groups, resampled = pa.get("query_ids"), "queries"
    if groups is None:
        groups, resampled = pa.get("user_ids"), "users"
    if groups is None:
        resampled = "rows"
    tasks, scenarios = a["tasks"], a["scenarios"]
    out_cells, deltas = {}, []
    for j, s in enumerate(scenarios):
        rows = pa["scenarios"][:, j].astype(bool)
        for k, t in enumerate(tasks):
            y = pa["labels"][:, k].astype(np.float64)
            res = metrics.paired_bootstrap_auc(y, pa["preds"][:, k], pb["preds"][:, k],
                                               groups=groups, n_boot=n_boot, seed=seed,
                                               alpha=alpha, mask=rows)
            valid = metrics.valid_mask(y, rows)
            out_cells[f"{s}/{t}"] = {
                "delta": res.delta, "low": res.low, "high": res.high, "p_value": res.p_value,
                "auc_a": res.auc_a, "auc_b": res.auc_b, "n_valid": res.n_valid,
                "positives": int(np.count_nonzero(valid & (y == 1)))}
            deltas.append(res.delta)
    return {"a": a["name"], "b": b["name"], "seed": a["seed"], "metric": "auc",
            "n_boot": n_boot, "alpha": alpha, "resampled": resampled,
            "mean_delta": _nanmean(deltas), "cells": out_cells}


# --------------------------------------------------------------------------- #
# the three benchmarks
# --------------------------------------------------------------------------- #
def _seeds(seed: int, seeds: int) -> List[int]:
    if seeds < 1:
        raise BenchmarkError(f"--seeds must be >= 1, got {seeds}.")
    return [seed + i for i in range(seeds)]


def _table_summary(suite: Suite, kind: str, results: List[dict], extra: Mapping[str, Any],
                   pairs: Sequence[Tuple[str, str]], n_boot: int) -> Dict[str, Any]:
    grouped = group_results(results)
    rows = [summarize_row(rs, suite.oracle, suite.min_positives) for rs in grouped.values()]
    bootstrap = []
    for a, b in pairs:
        if a in grouped and b in grouped and n_boot > 0:
            suite.log(f"bootstrap: AUC({a}) - AUC({b}), {n_boot} replicates")
            bootstrap.append(paired_bootstrap(grouped[a][0], grouped[b][0], n_boot=n_boot))
    first = results[0]
    return {
        "kind": kind, "preset": suite.preset, "data": suite.data_dir,
        "eval_rows": first["eval_rows"], "tasks": first["tasks"],
        "scenarios": first["scenarios"], "metrics": result_metrics(first),
        "cells": [f"{s}/{t}" for s, t in cells(first)],
        "positives": positives(first), "measurable": measurable(first, suite.min_positives),
        "train_positives": train_positives(suite.data_dir, suite.spec, first),
        "min_positives": suite.min_positives,
        "profile": dataclasses.asdict(suite.profile), "profile_text": suite.profile.describe(),
        "match": suite.match, "tolerance": suite.tolerance,
        "oracle": oracle_row(suite.oracle, first, suite.min_positives), "rows": rows,
        "bootstrap": bootstrap,
        "runs": [{k: r.get(k) for k in ("name", "model", "seed", "learning_rate", "counts",
                                         "flops_per_example", "train_seconds", "training",
                                         "config_source", "model_dir", "overrides")}
                 for r in results],
        "grid": suite.grid,
        **extra}


def quality(suite: Suite, models: Sequence[str], budget: Optional[int] = None, seed: int = 0,
            seeds: int = 1, n_boot: int = 1000) -> Dict[str, Any]:
    """Trains every model (parameter-matched to ``budget``) and summarises them;
    MDL / PMTA get paired-bootstrap intervals against the best other model."""
    models = check_models(models)
    jobs = suite.with_backbones([Job(name=m, model=m, seed=s, budget=budget)
                                 for m in models for s in _seeds(seed, seeds)])
    results = suite.run(jobs)
    best = best_baseline([summarize_row(rs, suite.oracle, suite.min_positives)
                          for rs in group_results(results).values()],
                         metric=result_metrics(results[0])[0])
    pairs = [(m, best) for m in models if m in FOCUS_MODELS and best is not None]
    pairs += [(j.name, j.warm_start) for j in {j.name: j for j in jobs}.values()
              if j.warm_start]   # PMTA(H) against H
    return _table_summary(suite, "quality", results,
                          {"models": models, "budget": budget, "seeds": _seeds(seed, seeds),
                           "best_baseline": best}, pairs, n_boot)


def ablation_variants(model: str, variants: Optional[Sequence[str]] = None
                      ) -> Dict[str, Tuple[str, ...]]:
    """``{variant: overrides}`` of `ABLATIONS` for ``model`` (all, or ``variants``)."""
    if model not in ABLATIONS:
        raise BenchmarkError(f"--model={model!r}: no ablation list; models with one: "
                             f"{', '.join(sorted(ABLATIONS))}.")
    table = ABLATIONS[model]
    if not variants:
        return dict(table)
    unknown = [v for v in variants if v not in table]
    if unknown:
        raise BenchmarkError(f"--variants: {unknown} are not ablations of {model}; choose from "
                             f"{', '.join(table)}.")
    return {v: table[v] for v in variants}


def ablation(suite: Suite, model: str, variants: Optional[Sequence[str]] = None,
             budget: Optional[int] = None, seed: int = 0, seeds: int = 1,
             n_boot: int = 1000) -> Dict[str, Any]:
    """One row per ablation variant of ``model`` (`ABLATIONS`). With a budget the
    full model is sized to it and every variant applies its switch to that sized
    config (so a variant's parameter count shows what the switch removes).
    Intervals: the full model against every variant."""
    check_models([model])
    table = ablation_variants(model, variants)
    jobs = suite.with_backbones([Job(name=v, model=model, seed=s, budget=budget,
                                     overrides=tuple(o))
                                 for v, o in table.items() for s in _seeds(seed, seeds)])
    results = suite.run(jobs)
    pairs = [("full", v) for v in table if v != "full"]
    pairs += [(j.name, j.warm_start) for j in {j.name: j for j in jobs}.values()
              if j.warm_start and j.name == "full"]   # PMTA(H) against H
    return _table_summary(suite, "ablation", results,
                          {"model": model,
                           "variants": {k: suite.resolve(v) for k, v in table.items()},
                           "budget": budget, "seeds": _seeds(seed, seeds)}, pairs, n_boot)


def scaling(suite: Suite, models: Sequence[str], budgets: Sequence[int],
            seed: int = 0) -> Dict[str, Any]:
    """Every model at every budget: mean AUC over cells against parameters and
    forward FLOPs per example (the MDL paper's Figure 2)."""
    models = check_models(models)
    budgets = sorted(set(int(b) for b in budgets))
    if len(budgets) < 2:
        raise BenchmarkError(f"--budgets: need at least 2 distinct budgets, got {budgets}.")
    jobs = suite.with_backbones([Job(name=f"{m}@{format_count(b)}", model=m, seed=seed,
                                     budget=b) for m in models for b in budgets])
    results = suite.run(jobs)
    first = results[0]
    metric = "auc"
    points = []
    keep = measurable(first, suite.min_positives)
    for r in results:
        values = _kept(cell_values(r["metrics"], r, metric), keep)
        gap = gap_of_means(values, _kept(cell_values(suite.oracle, r, metric), keep)
                           if suite.oracle else None)
        extra = {"mean_ne": _nanmean(_kept(cell_values(r["metrics"], r, "ne"), keep)),
                 "learning_rate": r.get("learning_rate"),
                 "epochs": (r.get("training") or {}).get("epochs")}
        if "qauc" in result_metrics(r):
            extra["mean_qauc"] = _nanmean(_kept(cell_values(r["metrics"], r, "qauc"), keep))
        points.append({"name": r["name"], "model": r["model"], "budget": r["budget"],
                       "params": r["counts"]["total"], "dense_params": r["counts"]["dense"],
                       "embedding_params": r["counts"]["embedding"],
                       "flops_per_example": r["flops_per_example"],
                       "mean_auc": _nanmean(values), "gap_closed": gap,
                       "train_seconds": r.get("train_seconds"), "model_dir": r["model_dir"],
                       **extra})
    oracle = oracle_row(suite.oracle, first, suite.min_positives)
    return {"kind": "scaling", "preset": suite.preset, "data": suite.data_dir,
            "eval_rows": first["eval_rows"], "models": models, "budgets": budgets,
            "seed": seed, "metric": f"mean AUC over the {sum(keep)} of {len(keep)} scenario x "
                                    f"task cells with >= {suite.min_positives} eval positives",
            "grid": suite.grid, "min_positives": suite.min_positives,
            "profile": dataclasses.asdict(suite.profile),
            "profile_text": suite.profile.describe(), "match": suite.match,
            "tolerance": suite.tolerance,
            "oracle_mean_auc": oracle["mean"]["auc"]["mean"] if oracle else None,
            "points": points}
