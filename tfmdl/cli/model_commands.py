"""``tfmdl models`` and ``tfmdl model-info``."""

from __future__ import annotations

import sys

from absl import flags

from tfmdl.cli.command import Command


def define_config_flags(fv) -> None:
    flags.DEFINE_string("config", None, "config YAML (model + params)", flag_values=fv)
    flags.DEFINE_string("data", None, "data directory with spec.yaml", flag_values=fv)
    flags.DEFINE_multi_string("set", [], "override a config field: --set params.width=128 "
                              "(repeatable)", flag_values=fv)
    flags.mark_flag_as_required("config", flag_values=fv)
    flags.mark_flag_as_required("data", flag_values=fv)


def load_spec_and_config(fv):
    """(spec, ExperimentConfig) from --data and --config/--set; errors are ValueErrors
    naming the file and key."""
    from tfmdl.models import experiment  # pylint: disable=g-import-not-at-top
    from tfmdl.pipelines import spec as spec_lib  # pylint: disable=g-import-not-at-top
    from tfmdl.training import config as train_config  # pylint: disable=g-import-not-at-top

    spec = spec_lib.load_spec(fv.data)
    config = experiment.load_config(fv.config, fv.set)
    # the training: section too, checked as `tfmdl train` checks it
    train_config.parse(config.raw.get("training"), config.source or fv.config, spec)
    return spec, config


class Models(Command):
    """Lists every registered model with the paper it comes from."""

    name = "models"
    summary = "list the registered models"

    def run(self, fv):
        from tfmdl.models import registry  # pylint: disable=g-import-not-at-top

        for name in registry.names():
            print(f"{name:<16} {registry.get(name).paper}")
        return 0


class ModelInfo(Command):
    """Builds the model a config describes for a data set's spec and prints its
parameter count (embedding tables vs dense weights) and forward matmul FLOPs per
example (training is about 3x that).

With --target_params=N it first scales the config's widths (every params field
ending in width/hidden/units, by one factor) until the parameter count is within
--tolerance of N, prints the config it chose and, with --out, writes it as a config
file (training section kept) for `tfmdl train`."""

    name = "model-info"
    summary = "parameter count and FLOPs per example of a configured model"

    def flags(self, fv):
        define_config_flags(fv)
        flags.DEFINE_string("target_params", None, "scale the widths to this many "
                            "parameters (4000000, 500k, 4M; see --match)", flag_values=fv)
        flags.DEFINE_enum("match", "total", ["total", "dense"], "what --target_params "
                          "counts: all trainable parameters, or the non-embedding ones",
                          flag_values=fv)
        flags.DEFINE_float("tolerance", 0.05, "accepted relative error of --target_params",
                           flag_values=fv)
        flags.DEFINE_string("out", None, "write the chosen config (YAML) here",
                            flag_values=fv)

    def run(self, fv):
        import yaml  # pylint: disable=g-import-not-at-top

        from tfmdl import config as config_lib  # pylint: disable=g-import-not-at-top
        from tfmdl.models import cost  # pylint: disable=g-import-not-at-top
        from tfmdl.models import experiment  # pylint: disable=g-import-not-at-top
        from tfmdl.models import sizing  # pylint: disable=g-import-not-at-top
        from tfmdl.pipelines import tfrecord  # pylint: disable=g-import-not-at-top

        try:
            spec, config = load_spec_and_config(fv)
            if fv.target_params is not None:
                target = config_lib.parse_count(fv.target_params, "--target_params")
                fit = sizing.fit_to_budget(config.model, spec, target,
                                           config.params, count=fv.match,
                                           tolerance=fv.tolerance)
                config = experiment.load_config(
                    dict(config.raw, params=config_lib.to_dict(fit.params)))
                print(f"fitted {config.model} to {target:,} {fv.match} parameters: "
                      f"{fit.count:,} ({fit.relative_error:+.1%}) after {fit.builds} builds")
                text = yaml.safe_dump(config.to_dict(), sort_keys=False,
                                      default_flow_style=None)
                print("chosen config:\n" + "\n".join("  " + line
                                                     for line in text.splitlines()))
                if fv.out:
                    tfrecord.atomic_write_text(fv.out, text)
                    print(f"wrote {fv.out}")
            built = experiment.from_config(config, spec)
        except ValueError as exc:
            sys.stderr.write(f"tfmdl model-info: {exc}\n")
            return 2
        info = cost.model_info(built)
        print(f"model: {config.model} ({fv.config})")
        print(f"params: {info['params_total']:,} total = {info['params_embedding']:,} "
              f"embedding + {info['params_dense']:,} dense")
        print(f"forward matmul FLOPs per example: {info['flops_per_example']:,} "
              f"({cost.format_count(info['flops_per_example'])})")
        return 0


COMMANDS = [Models(), ModelInfo()]
