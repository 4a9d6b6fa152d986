"""`FilterMuon`: airbench94_muon's optimizer (Jordan, 2024-25) as one Keras optimizer.

    optimizer = FilterMuon(schedule, rates={"image_whiten/bias": 0.053 * batch, ...})

- Convolution kernels (4-D variables) take Muon steps: Nesterov momentum (0.6), the update
  orthogonalized by three Newton-Schulz iterations (the kernel read as an (inputs x outputs)
  matrix), and the kernel renormalized to norm sqrt(outputs) before each step. A kernel
  followed by BatchNorm is scale-free, so the renormalization is its weight decay, and the
  step (`filter_rate`) is a fraction of the kernel's norm whatever the loss's scale.
- Every other trainable variable takes Nesterov SGD (momentum 0.85) at its own rate
  (`rates`, by variable path; `default_rate` otherwise) with coupled weight decay:
  `decay` per step, through the momentum, as airbench's `weight_decay=wd / lr` groups.
- The learning rate (a schedule) multiplies every rate: airbench decays it linearly to 0.
Keras's own `keras.optimizers.Muon` takes Adam steps for anything not 2-D, convolution
kernels included; airbench's gain comes from Muon on exactly those.
"""

import math

import keras
from keras import ops

from mmkeras.argument_checks import check_non_negative, check_open_unit, check_positive_int, check_rate

NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix, steps=3, epsilon=1e-7):
    """Newton-Schulz approximation of U V^T for `matrix` = U S V^T (Muon's quintic
    iteration: singular values land in about [0.7, 1.2], which is all Muon needs)."""
    a, b, c = NEWTON_SCHULZ
    tall = matrix.shape[0] > matrix.shape[1]
    x = ops.transpose(matrix) if tall else matrix
    x = x / (ops.sqrt(ops.sum(ops.square(x))) + epsilon)
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return ops.transpose(x) if tall else x


@keras.saving.register_keras_serializable(package="mmkeras")
class FilterMuon(keras.optimizers.Optimizer):
    """Muon on convolution kernels, Nesterov SGD on the rest (see the module docstring).

    learning_rate: a multiplier of every rate below (a schedule; airbench: 1 -> 0 linearly).
    filter_rate: Muon's step on a kernel of norm sqrt(outputs) (airbench: 0.24 at batch 2,000).
    filter_momentum, momentum: Nesterov momenta of the Muon and SGD steps.
    rates: {variable path: SGD rate}; default_rate for variables not named.
    decay: coupled weight decay of the SGD variables, per step (airbench: 2e-6 x batch).
    ns_steps: Newton-Schulz iterations.
    """

    def __init__(self, learning_rate=1.0, filter_rate=0.24, filter_momentum=0.6, momentum=0.85, rates=None,
                 default_rate=0.01, decay=0.0, ns_steps=3, name="filter_muon", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        positive = math.inf
        self.filter_rate = check_open_unit("filter_rate", filter_rate, high=positive)
        self.default_rate = check_open_unit("default_rate", default_rate, high=positive)
        self.filter_momentum, self.momentum = check_rate("filter_momentum", filter_momentum), check_rate("momentum", momentum)
        self.rates = {str(k): check_open_unit(f"rates[{k!r}]", v, high=positive) for k, v in dict(rates or {}).items()}
        self.decay, self.ns_steps = check_non_negative("decay", decay), check_positive_int("ns_steps", ns_steps)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.momentums = [self.add_variable_from_reference(v, name="momentum") for v in var_list]
        # Looked up by index in the step: there the TensorFlow backend passes its own variables.
        self._variable_rates = [self.rate_of(v) for v in var_list]

    def rate_of(self, variable):
        """The SGD rate of `variable` (None for a kernel that takes Muon steps)."""
        if len(variable.shape) == 4:
            return None
        return self.rates.get(variable.path, self.default_rate)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        momentum, rate = self.momentums[index], self._variable_rates[index]
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if rate is None:
            self._muon_step(gradient, variable, learning_rate, momentum)
            return
        if self.decay:
            gradient = gradient + (self.decay / rate) * variable
        self.assign(momentum, self.momentum * momentum + gradient)
        self.assign_sub(variable, learning_rate * rate * (gradient + self.momentum * momentum))

    def _muon_step(self, gradient, variable, learning_rate, momentum):
        self.assign(momentum, self.filter_momentum * momentum + gradient)
        nesterov = gradient + self.filter_momentum * momentum
        outputs = variable.shape[-1]
        update = ops.reshape(orthogonalize(ops.reshape(nesterov, (-1, outputs)), self.ns_steps), variable.shape)
        norm = ops.sqrt(ops.sum(ops.square(variable)))
        self.assign(variable, variable * (math.sqrt(outputs) / (norm + 1e-12)) - learning_rate * self.filter_rate * update)

    def get_config(self):
        config = super().get_config()
        config.update(filter_rate=self.filter_rate, filter_momentum=self.filter_momentum, momentum=self.momentum,
                      rates=dict(self.rates), default_rate=self.default_rate, decay=self.decay, ns_steps=self.ns_steps)
        return config
