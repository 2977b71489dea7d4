"""``tfmdl plot ...``: pictures of trained models (matplotlib, the ``plots`` extra)."""

from __future__ import annotations

import os
import sys

from absl import flags

from tfmdl.cli.command import Command


class Attention(Command):
    """Heatmaps of a trained model's domain-aware attention (the MDL paper's Figures 3
and 4): for every layer, the weights the scenario tokens (and the global token) and the
task tokens put on the feature tokens, averaged over heads and over the examples of
each scenario (and over all examples). Rows are named by the scenarios / tasks, columns
by the spec's semantic groups. Writes OUT/attention_scenario.png,
OUT/attention_task.png (one row of panels per layer) and OUT/attention.json (the
averaged matrices). Models without an attention read-out (anything but MDL with
domain-aware attention) get an error."""

    name = "plot attention"
    summary = "heatmaps of MDL's domain-aware attention per layer and scenario"

    def flags(self, fv):
        flags.DEFINE_string("model_dir", None, "a trained model directory", flag_values=fv)
        flags.DEFINE_string("data", None, "data directory (the model's spec)", flag_values=fv)
        flags.DEFINE_string("out", None, "output directory (default MODEL_DIR/attention)",
                            flag_values=fv)
        flags.DEFINE_string("split", "eval", "split to average over", flag_values=fv)
        flags.DEFINE_integer("max_examples", None, "average over at most this many examples",
                             lower_bound=1, flag_values=fv)
        flags.DEFINE_integer("batch_size", 1024, "examples per forward pass", lower_bound=1,
                             flag_values=fv)
        flags.mark_flag_as_required("model_dir", flag_values=fv)
        flags.mark_flag_as_required("data", flag_values=fv)

    def run(self, fv):
        from tfmdl import attention_maps  # pylint: disable=g-import-not-at-top
        from tfmdl import evaluation  # pylint: disable=g-import-not-at-top
        from tfmdl import plots  # pylint: disable=g-import-not-at-top
        from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top
        from tfmdl.training import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top

        out = fv.out or os.path.join(fv.model_dir, "attention")
        try:
            plots.require()
            built, _ = model_dir_lib.load_trained(fv.model_dir)
            maps = attention_maps.average_attention(
                built, fv.data, split=fv.split, batch_size=fv.batch_size,
                max_examples=fv.max_examples, where=fv.model_dir)
            written = [os.path.join(out, "attention.json")]
            os.makedirs(out, exist_ok=True)
            evaluation.write_json(written[0], maps)
            for kind in attention_maps.kinds(maps):
                path = os.path.join(out, f"attention_{kind}.png")
                plots.attention_heatmaps(maps, kind, path)
                written.append(path)
        except (attention_maps.AttentionUnavailable, plots.PlotsUnavailable,
                model_dir_lib.ModelDirError, reader.DataError) as exc:
            sys.stderr.write(f"tfmdl plot attention: {exc}\n")
            return 2
        counts = ", ".join(f"{n}: {c:,}" for n, c in zip(maps["slices"], maps["counts"]))
        print(f"averaged the attention of {maps['model']} over {maps['examples']:,} "
              f"{fv.split} examples ({counts})")
        print("wrote " + ", ".join(written))
        return 0


COMMANDS = [Attention()]
