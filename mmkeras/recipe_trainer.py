"""The trainer behind the "distill" and "ogm_ge" fusion recipes (mmkeras.fusion_recipes).

`RecipeTrainer` wraps a fused functional model for `fit` only: it shares the model's
layers (so training it trains the model, and the recipe returns the plain model, which
saves and loads like any other) and replaces the train step with one that

- gives each borrowed branch (`image_*`, `text_*` layers) its own optimizer, a copy of
  the compiled one whose learning rate is `branch_learning_rate_scale` times the main
  one's at every step. Keras 3 has no per-variable learning rate, and scaling the
  gradients would not do it: Adam divides each step by the gradient's running scale;
- optionally adds a feature distillation term (uni-modal teacher, Du et al. 2023): for
  each modality, the squared distance between the fused model's pooled branch vector
  and the teacher's (the vector the teacher's head reads), over the teacher's mean
  square, so the weight does not depend on the feature scale. Teachers run frozen, in
  inference mode, inside the step (no per-step Python; nothing precomputed to go stale
  when the pipeline shuffles or drops modalities);
- optionally modulates the branches on the fly (OGM-GE, Peng et al. 2022): per batch,
  each modality's score is the fused model's summed probability of the true class with
  the *other* modality blanked (the blanks of mmkeras.explain.contributions; inference
  mode, no gradient), rho = s_image / s_text, and the dominant modality's branch step is
  scaled by 1 - tanh(alpha * relu(rho - 1)) (relu(1/rho - 1) for text). The paper scales
  the gradient under SGD; under Adam the same effect needs the step scaled, which is
  what is done here. With `gradient_noise`, Gaussian noise with the standard deviation
  of each branch gradient tensor is added to it (the "GE" part), to both branches, as
  in the paper's code.

The extra figures are logged per epoch (and on the validation split): "image_distill",
"text_distill"; "image_coefficient", "text_coefficient", "score_ratio". The trainer is
never saved: it is a training device, not a model of the zoo.
"""

import dataclasses

import keras
import tensorflow as tf
from keras import ops

from mmkeras.argument_checks import check_bool, check_non_negative
from mmkeras.explain.contributions import blank_image, blank_text
from mmkeras.models.experts import branch_vector

BRANCHES = ("image", "text")
_EPSILON = 1e-6


@dataclasses.dataclass(frozen=True)
class _Graphs:
    """Models the trainer calls but must not track as its own layers: Keras would count
    the teachers' weights among the fused model's (and save them with its best weights)."""

    fused: keras.Model  # inputs -> {"outputs": the fused model's outputs, "image"/"text": branch vectors}
    teachers: dict  # modality -> keras.Model(inputs -> the teacher's head input)


class RecipeTrainer(keras.Model):
    """Trains `model` with its branches on their own learning rate, and optionally a
    distillation term and OGM-GE modulation (see the module docstring).

    Args:
        model: a fused mmkeras functional model (dict inputs "image", "text"; dict
            outputs with "label"). Its trainable variables are what is trained.
        branch_learning_rate_scale: the branches' learning rate over the main one, > 0.
        teachers: None or {"image": model, "text": model}, the trained unimodal models
            the branches came from (needed for distillation).
        distill_weight: weight of the summed per-modality distillation distances, >= 0.
        alpha: None (no modulation) or the OGM-GE strength, >= 0 (0: coefficients 1).
        gradient_noise: with modulation, add the GE noise to the branch gradients.
        seed: seed of the GE noise.
    """

    def __init__(self, model, *, branch_learning_rate_scale=0.1, teachers=None, distill_weight=0.0, alpha=None,
                 gradient_noise=True, seed=0):
        # Checked before anything is built: the recipes pass their options straight on.
        teachers = dict(teachers or {})
        if set(teachers) - set(BRANCHES):
            raise ValueError(f"`teachers` maps modalities ({', '.join(BRANCHES)}) to trained unimodal models. "
                             f"Received keys {sorted(teachers)}.")
        branch_learning_rate_scale = _check_scale(branch_learning_rate_scale)
        distill_weight = check_non_negative("distill_weight", distill_weight)
        alpha = None if alpha is None else check_non_negative("alpha", alpha)
        gradient_noise = check_bool("gradient_noise", gradient_noise)
        super().__init__(model.input, model.output, name=f"{model.name}_trainer")
        self.branch_learning_rate_scale, self.distill_weight = branch_learning_rate_scale, distill_weight
        self.alpha, self.gradient_noise = alpha, gradient_noise
        vectors = {m: branch_vector(t, model, m) for m, t in teachers.items()}
        self.graphs = _Graphs(
            fused=keras.Model(model.input, {"outputs": model.output, **vectors}),
            teachers={m: keras.Model(t.input, branch_vector(t, t, m)) for m, t in teachers.items()})
        names = [f"{m}_distill" for m in teachers]
        if self.alpha is not None:
            names += ["image_coefficient", "text_coefficient", "score_ratio"]
            self.noise_seed = keras.random.SeedGenerator(seed)
        self.recipe_metrics = [keras.metrics.Mean(name=n) for n in names]

    def options(self):
        """The settings that shaped this training, for a recipe's stats."""
        out = {"branch_learning_rate_scale": self.branch_learning_rate_scale}
        if self.graphs.teachers:
            out["distill_weight"] = self.distill_weight
        if self.alpha is not None:
            out.update(alpha=self.alpha, gradient_noise=self.gradient_noise)
        return out

    def compile(self, **kwargs):
        super().compile(**kwargs)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError("The distill / ogm_ge fusion recipes train in float32 (the benchmark's fused rows "
                             "do). Received an optimizer with loss scaling, from the dtype policy "
                             f"{self.dtype_policy.name!r}.")
        # Each branch's variables, by the prefix of the layer that owns them.
        owner = {id(v): m for layer in self.layers for m in BRANCHES if layer.name.startswith(f"{m}_")
                 for v in layer.trainable_variables}
        self.groups = {g: [v for v in self.trainable_variables if owner.get(id(v), "main") == g]
                       for g in ("main", *BRANCHES)}
        config = {**self.optimizer.get_config(), "learning_rate": 0.0}
        self.branch_optimizers = {m: type(self.optimizer).from_config(config) for m in BRANCHES}
        for m in BRANCHES:
            self.branch_optimizers[m].build(self.groups[m])

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        coefficients, logs = self._modulation(x, y)
        with tf.GradientTape() as tape:
            y_pred, distances = self._forward(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            total = loss + self.distill_weight * sum(distances.values(), 0.0)
        variables = [v for g in ("main", *BRANCHES) for v in self.groups[g]]
        gradients = dict(zip(map(id, variables), tape.gradient(total, variables)))
        # The schedule's rate at this step, read before the main optimizer counts it.
        learning_rate = ops.cast(self.optimizer.learning_rate, "float32")
        self._apply(self.optimizer, gradients, self.groups["main"])
        for m in BRANCHES:
            optimizer = self.branch_optimizers[m]
            optimizer.learning_rate.assign(learning_rate * self.branch_learning_rate_scale * coefficients[m])
            noise = self.alpha is not None and self.gradient_noise
            self._apply(optimizer, gradients, self.groups[m], noise=noise)
        return self._logs(x, y, y_pred, sample_weight, loss, logs, distances)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, logs = self._modulation(x, y)
        y_pred, distances = self._forward(x, training=False)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
        return self._logs(x, y, y_pred, sample_weight, loss, logs, distances)

    def _forward(self, x, training):
        """(the model's outputs, {modality: normalised distance to its teacher's features})."""
        if not self.graphs.teachers:
            return self(x, training=training), {}
        out = self.graphs.fused(x, training=training)
        distances = {}
        for m, teacher in self.graphs.teachers.items():
            target = ops.stop_gradient(ops.cast(teacher(x, training=False), "float32"))
            error = ops.mean(ops.square(ops.cast(out[m], "float32") - target))
            distances[m] = error / (ops.mean(ops.square(target)) + _EPSILON)
        return out["outputs"], distances

    def _modulation(self, x, y):
        """({modality: step coefficient}, logs) for this batch; coefficients 1 without OGM-GE."""
        if self.alpha is None:
            return {m: 1.0 for m in BRANCHES}, {}
        labels = ops.cast(ops.reshape(y["label"] if isinstance(y, dict) else y, (-1, 1)), "int32")

        def score(features):
            probabilities = self(features, training=False)["label"]
            return ops.sum(ops.take_along_axis(ops.cast(probabilities, "float32"), labels, axis=1))

        # A modality's score: what the fused model gets right from it alone.
        image_score = ops.stop_gradient(score({**x, "text": blank_text(x["text"])}))
        text_score = ops.stop_gradient(score({**x, "image": blank_image(x["image"])}))
        ratio = image_score / (text_score + _EPSILON)
        coefficients = {"image": 1.0 - ops.tanh(self.alpha * ops.relu(ratio - 1.0)),
                        "text": 1.0 - ops.tanh(self.alpha * ops.relu(1.0 / (ratio + _EPSILON) - 1.0))}
        return coefficients, {"image_coefficient": coefficients["image"], "text_coefficient": coefficients["text"],
                              "score_ratio": ratio}

    def _apply(self, optimizer, gradients, variables, noise=False):
        pairs = [(gradients[id(v)], v) for v in variables if gradients[id(v)] is not None]
        if not pairs:
            return
        if noise:  # GE: noise with the spread of each gradient tensor (embeddings' sparse ones made dense)
            pairs = [(g + keras.random.normal(ops.shape(g), stddev=ops.std(g), seed=self.noise_seed), v)
                     for g, v in ((tf.convert_to_tensor(g), v) for g, v in pairs)]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    def _logs(self, x, y, y_pred, sample_weight, loss, modulation, distances):
        batch = ops.shape(x["image"])[0]
        for metric in self.metrics:
            if metric.name == "loss":  # the compiled loss (the fused and auxiliary heads), as other recipes log it
                metric.update_state(loss, sample_weight=batch)
        values = {**modulation, **{f"{m}_distill": d for m, d in distances.items()}}
        for metric in self.recipe_metrics:
            metric.update_state(values[metric.name])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ValueError("`branch_learning_rate_scale` (the borrowed branches' learning rate over the fusion and "
                         f"head's) must lie in (0, 1]. Received branch_learning_rate_scale={scale!r}.")
    return float(scale)
