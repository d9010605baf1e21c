"""Train a layer chain as a plain torch module: Keras' function, about twice Keras' speed.

Keras 3 on its torch backend runs seed650's training step in 130-140 us per image (batch 256,
2 CPU threads); the same step written with torch's own functions takes 66-75 us
(benchmarks/TRAINING_LOG.md). The difference is Keras' layer machinery: every call transposes
the kernels, pads 'same' max pooling by replicating the border, and runs its optimizer and
metrics in Python one variable at a time. So when torch is installed and every layer of the
network is in the trainer's table (``torch_forms``), ``layerlab train`` builds the network here, from the spec and
layerlab's own geometry, and trains it with torch's Adam; anything else trains with Keras' fit.

Keras stays the oracle and the product: the initial weights come from the Keras model built from
the spec (its initializers and seed), tests/test_torch_train.py checks this module's forward pass
against Keras' predict for every supported layer type in both data formats, and the trained
weights are saved as a Keras model built from the spec.

The optimizer is Keras' Adam/AdamW update rule written with torch's tensor functions
(``KerasAdam``), the schedule ``recipes.learning_rate_at`` (Keras' CosineDecay with warm-up) and
the weight average Keras' ``use_ema``. One deliberate difference: a network ending in softmax is
trained on log_softmax of its logits instead of log(clip(softmax, 1e-7)), the same loss wherever
no probability is below 1e-7, and without the clip's zero gradient where one is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from layerlab import spec as S
from layerlab.errors import ModelFileError
from layerlab.train.recipes import Recipe, effective_ema_momentum, learning_rate_at, run_steps
from layerlab.train.sampling import ImportanceSampler
from layerlab.train.torch_forms import unsupported

# Keras' activation functions (keras.activations, the names the spec accepts).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "relu6": F.relu6,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),  # the activation's default slope (the layer's is 0.3)
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": F.hardsigmoid,  # Keras 3: relu6(x + 3) / 6
    "hard_sigmoid_keras2": lambda x: torch.clamp(0.2 * x + 0.5, 0.0, 1.0),
    "hard_silu": F.hardswish,  # x * relu6(x + 3) / 6
    "hard_swish": F.hardswish,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "elu": F.elu,
    "selu": F.selu,
    "softplus": lambda x: torch.logaddexp(x, torch.zeros_like(x)),  # log(1 + exp(x)), no overflow
    "softsign": F.softsign,
    "swish": F.silu,
    "silu": F.silu,
    "gelu": F.gelu,  # exact (erf) form, Keras' activation default
    "exponential": torch.exp,
}


def _relu(layer: S.ReLU) -> Callable[[torch.Tensor], torch.Tensor]:
    """Keras' relu(x, negative_slope, max_value, threshold), in its order of operations."""
    max_value, slope, threshold = layer.max_value, float(layer.negative_slope), float(layer.threshold)

    def relu(x):
        positive = x * (x > threshold).to(x.dtype) if threshold else torch.relu(x)
        if max_value is not None:
            positive = torch.clamp(positive, 0.0, float(max_value))
        if slope:
            positive = positive - slope * torch.relu(threshold - x)
        return positive

    return relu


def _nchw(x: torch.Tensor, data_format: str) -> torch.Tensor:
    return x if data_format == S.CHANNELS_FIRST else x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW, dense (faster convs)


def _back(x: torch.Tensor, data_format: str) -> torch.Tensor:
    return x if data_format == S.CHANNELS_FIRST else x.permute(0, 2, 3, 1)  # NCHW -> NHWC


class TorchNetwork(torch.nn.Module):
    """A spec's layer chain as torch operations; weights kept in Keras' layouts.

    Conv2D kernels stay ``(kh, kw, in, filters)`` and Dense kernels ``(in, units)``, so the
    weights dict goes in and out unchanged (Adam is element-wise: the layout does not matter to
    training). Every windowed layer computes in NCHW and returns the layer's own data_format.
    """

    def __init__(self, model: S.Model, weights: dict[str, dict[str, np.ndarray]]):
        super().__init__()
        reason = unsupported(model)
        if reason:
            raise ValueError(f"network '{model.name}': {reason}; train it with Keras' fit")
        self.model = model
        self.names: list[tuple[str, str]] = []  # (layer, weight) of each parameter, in order
        self.params = torch.nn.ParameterList()
        self.steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
        for info in model.infos:
            self.steps.append(self._step(info.layer, info.input_shapes[0], weights))
        last = model.layers[-1]
        self.ends_in_softmax = isinstance(last, (S.Activation, S.Dense)) and last.activation == "softmax"

    def _param(self, layer: S.Layer, name: str, weights) -> torch.nn.Parameter:
        self.names.append((layer.name, name))
        param = torch.nn.Parameter(torch.tensor(np.asarray(weights[layer.name][name], np.float32)))
        self.params.append(param)
        return param

    def _step(self, layer: S.Layer, in_shape: tuple[int, ...], weights) -> Callable[[torch.Tensor], torch.Tensor]:
        if isinstance(layer, S.Conv2D):
            kernel = self._param(layer, "kernel", weights)
            bias = self._param(layer, "bias", weights) if layer.use_bias else None
            win = layer.window(in_shape)
            pads = (win.pad_left, win.pad_right, win.pad_top, win.pad_bottom)
            act, fmt = ACTIVATIONS[layer.activation], layer.data_format

            def conv(x):
                x = _nchw(x, fmt)
                if any(pads):
                    x = F.pad(x, pads)  # zeros, the odd one after (bottom/right)
                y = F.conv2d(x, kernel.permute(3, 2, 0, 1), bias, stride=layer.strides, dilation=layer.dilation_rate)
                return act(_back(y, fmt))

            return conv
        if isinstance(layer, S.MaxPooling2D):
            return self._max_pool(layer, in_shape)
        if isinstance(layer, S.AveragePooling2D):
            return self._average_pool(layer, in_shape)
        if isinstance(layer, S.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            fmt = layer.data_format
            return lambda x: _back(F.pad(_nchw(x, fmt), (left, right, top, bottom)), fmt)
        if isinstance(layer, S.Activation):
            return ACTIVATIONS[layer.activation]
        if isinstance(layer, S.ReLU):
            return _relu(layer)
        if isinstance(layer, S.Flatten):
            if layer.data_format == S.CHANNELS_FIRST and len(in_shape) > 1:
                return lambda x: torch.movedim(x, 1, -1).reshape(len(x), -1)  # Keras: channels to the end first
            return lambda x: x.reshape(len(x), -1)
        if isinstance(layer, S.Dense):
            kernel = self._param(layer, "kernel", weights)
            bias = self._param(layer, "bias", weights) if layer.use_bias else None
            act = ACTIVATIONS[layer.activation]
            self._last_dense = (kernel, bias)
            return lambda x: act(x @ kernel + bias if bias is not None else x @ kernel)
        if isinstance(layer, S.Dropout):
            rate = float(layer.rate)
            return lambda x: F.dropout(x, rate, self.training) if rate else x
        if isinstance(layer, S.Reshape):
            target = layer.output_shape(in_shape)
            return lambda x: x.reshape(len(x), *target)
        if isinstance(layer, S.Rescaling):
            scale, offset = float(layer.scale), float(layer.offset)
            return lambda x: x * scale + offset
        raise ValueError(f"layer '{layer.name}' ({layer.type}) has no torch form")  # unsupported() said so first

    def _max_pool(self, layer: S.MaxPooling2D, in_shape):
        win, fmt = layer.window(in_shape), layer.data_format
        pads = (win.pad_left, win.pad_right, win.pad_top, win.pad_bottom)
        # Padding only after, and torch's ceil_mode gives the same windows: no padded copy.
        ceil = win.pad_top == win.pad_left == 0 and all(
            math.ceil((size - k) / s) + 1 == out
            for size, k, s, out in ((win.in_h, win.kernel_h, win.stride_h, win.out_h), (win.in_w, win.kernel_w, win.stride_w, win.out_w))
        )

        def pool(x):
            x = _nchw(x, fmt)
            if any(pads) and not ceil:
                x = F.pad(x, pads, value=-math.inf)  # padded cells never win
            return _back(F.max_pool2d(x, layer.pool_size, layer.strides, ceil_mode=ceil and any(pads)), fmt)

        return pool

    def _average_pool(self, layer: S.AveragePooling2D, in_shape):
        win, fmt = layer.window(in_shape), layer.data_format
        pads = (win.pad_left, win.pad_right, win.pad_top, win.pad_bottom)
        # Padded cells are left out of the count: divide window sums by real-cell counts.
        real = F.pad(torch.ones(1, 1, win.in_h, win.in_w), pads)
        count = F.avg_pool2d(real, layer.pool_size, layer.strides, divisor_override=1)  # (1, 1, out_h, out_w)

        def pool(x):
            x = F.pad(_nchw(x, fmt), pads)
            total = F.avg_pool2d(x, layer.pool_size, layer.strides, divisor_override=1)
            return _back(total / count, fmt)

        return pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output (what Keras' predict returns)."""
        for step in self.steps:
            x = step(x)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the final softmax (``ends_in_softmax`` networks only)."""
        for step in self.steps[:-1]:
            x = step(x)
        if isinstance(self.model.layers[-1], S.Activation):
            return x
        kernel, bias = self._last_dense
        return x @ kernel + bias if bias is not None else x @ kernel

    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        """The current weights as a layerlab weights dict (Keras layouts)."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for (layer, name), param in zip(self.names, self.params, strict=True):
            out.setdefault(layer, {})[name] = param.detach().numpy().copy()
        return out


class KerasAdam:
    """Keras' Adam and AdamW update rule on torch tensors, step for step.

    ``keras.optimizers.Adam.update_step``: ``m += (g - m)(1 - beta_1)``, ``v += (g^2 - v)(1 - beta_2)``,
    ``w -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)``; AdamW first
    ``w -= w * weight_decay * lr``. torch's own Adam adds epsilon after the bias correction
    instead, which moves weights with tiny gradients differently in the first steps (measured
    3e-3 apart from Keras after 4 steps of seed650; 1e-4 with this class, float32 rounding).
    """

    def __init__(self, params: list[torch.nn.Parameter], recipe: Recipe):
        self.params = params
        self.beta_1, self.beta_2, self.epsilon = recipe.beta_1, recipe.beta_2, recipe.epsilon
        self.weight_decay = recipe.weight_decay if recipe.optimizer == "adamw" else 0.0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.iterations = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, learning_rate: float) -> None:
        t = self.iterations + 1
        alpha = learning_rate * math.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.weight_decay:
            torch._foreach_mul_(self.params, 1.0 - self.weight_decay * learning_rate)
        torch._foreach_lerp_(self.m, grads, 1.0 - self.beta_1)
        torch._foreach_lerp_(self.v, torch._foreach_mul(grads, grads), 1.0 - self.beta_2)
        denominator = torch._foreach_sqrt(self.v)
        torch._foreach_add_(denominator, self.epsilon)
        torch._foreach_addcdiv_(self.params, self.m, denominator, value=-alpha)
        self.iterations = t


class TorchTrainer:
    """Epochs of one recipe on a ``TorchNetwork``: Adam/AdamW, the recipe's schedule, Keras' EMA.

    The exponential moving average follows Keras' ``use_ema``: after every step
    ``average = m * average + (1 - m) * weight``, with ``m = 0`` on the first step.
    """

    name = "torch"

    def __init__(self, model: S.Model, weights, recipe: Recipe, total_steps: int, *, from_logits: bool = False):
        self.net = TorchNetwork(model, weights)
        self.recipe, self.total_steps, self.from_logits = recipe, total_steps, from_logits
        params = list(self.net.params)
        self.optimizer = KerasAdam(params, recipe)
        self.momentum = effective_ema_momentum(recipe, total_steps)
        self.averages = [p.detach().clone() for p in params] if self.momentum is not None else None
        self.step = 0  # optimizer steps taken (Adam's t, the EMA's first step)
        self.position = 0.0  # where the schedule is, in steps (= self.step unless the recipe samples)
        self.sampler: ImportanceSampler | None = None  # made by the first epoch when the recipe samples

    @property
    def learning_rate(self) -> float:
        return learning_rate_at(self.recipe, self.position, self.total_steps)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-image loss (B,), the network's output, per-image |probabilities - target| (B,))."""
        smoothing = self.recipe.label_smoothing
        if smoothing:
            y = y * (1.0 - smoothing) + smoothing / y.shape[-1]
        if self.from_logits or self.net.ends_in_softmax:
            out = self.net(x) if self.from_logits else self.net.logits(x)
            log_p = F.log_softmax(out, dim=-1)
            p = log_p.detach().exp()
        else:  # Keras on probabilities: normalise, clip at 1e-7
            out = self.net(x)
            p = out / out.sum(dim=-1, keepdim=True)
            log_p = torch.log(torch.clamp(p, 1e-7, 1.0 - 1e-7))
            p = p.detach()
        return -(y * log_p).sum(dim=-1), out, torch.linalg.vector_norm(p - y, dim=-1)

    def fit_epoch(self, x: np.ndarray, y: np.ndarray, *, seed: int, epoch: int = 0, order: np.ndarray | None = None,
                  callbacks=(), progress=None) -> dict:
        """One pass over the training images ``x[order], y[order]`` (``order`` None: as they are).

        Returns the mean loss and accuracy. With the recipe's ``sample_fraction`` the pass keeps a
        subset of the images (drawn from ``seed``) and weights their losses
        (``layerlab.train.sampling``): the loss and accuracy returned are then the weighted
        estimates for all images (NaN if the draw kept none), and the epoch covers its nominal
        share of the schedule (``recipes.run_steps``) whatever number it trained on.
        ``"images"`` says how many images the pass trained on.

        ``progress(step, logs, steps)`` is called after every step. ``callbacks`` are Keras
        callbacks; only their ``on_epoch_begin``, ``on_train_batch_end`` and ``on_epoch_end``
        hooks are called, with no Keras model attached (``self.model`` is None).
        """
        torch.manual_seed(seed)  # dropout masks, reproducible on resume
        self.net.train()
        batch = self.recipe.batch_size
        sampled = self.recipe.sample_fraction is not None
        ids = None if order is None else np.asarray(order)
        if sampled:
            if self.sampler is None:
                self.sampler = ImportanceSampler(len(x), self.recipe.sample_fraction, self.recipe.sample_floor)
            ids, weights, scale = self.sampler.epoch(len(x), ids, np.random.default_rng([seed, 4099]))
            first = run_steps(self.recipe, len(x), epoch)  # the schedule's position at the epoch's start
            nominal = run_steps(self.recipe, len(x), epoch + 1) - first
        if ids is None:
            xs, ys = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        else:
            xs, ys = torch.from_numpy(x[ids]), torch.from_numpy(y[ids])  # one gather: contiguous copies
        total_loss, correct, seen = 0.0, 0.0, 0.0
        steps = math.ceil(len(xs) / batch)
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for index in range(steps):
            part = slice(index * batch, (index + 1) * batch)
            losses, out, errors = self._loss(xs[part], ys[part])
            hits = (out.detach().argmax(dim=-1) == ys[part].argmax(dim=-1)).float()
            if not sampled:
                w, loss = torch.ones(len(hits)), losses.mean()
            else:
                w = torch.from_numpy(weights[part])
                loss = (w * losses).sum() * (scale / len(hits))  # averages to the full mean loss
                self.sampler.update(ids[part], errors.numpy())
            total_loss += float((w * losses.detach()).sum())
            correct += float((w * hits).sum())
            seen += float(w.sum())
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step(self.learning_rate)
            self._average()
            self.step += 1
            self.position = first + (index + 1) * nominal / steps if sampled else self.step
            logs = {"loss": total_loss / seen, "accuracy": correct / seen}
            if progress is not None:
                progress(index + 1, logs, steps)
            for callback in callbacks:
                callback.on_train_batch_end(index, logs)
        logs = {"loss": total_loss / seen, "accuracy": correct / seen} if seen else {"loss": math.nan, "accuracy": math.nan}
        logs["images"] = len(xs)
        if sampled:
            self.position = first + nominal  # also when the draw kept no image
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        return logs

    def _average(self) -> None:
        if self.averages is None:
            return
        m = 0.0 if self.step == 0 else self.momentum
        with torch.no_grad():
            for average, param in zip(self.averages, self.net.params, strict=True):
                average.mul_(m).add_(param.detach(), alpha=1.0 - m)

    @contextlib.contextmanager
    def _swapped(self):
        """Inside the block the network holds the averages (when kept)."""
        if self.averages is None:
            yield
            return
        raw = [p.detach().clone() for p in self.net.params]
        with torch.no_grad():
            torch._foreach_copy_(list(self.net.params), self.averages)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(list(self.net.params), raw)

    def predict(self, x: np.ndarray, batch_size: int = 2000) -> np.ndarray:
        """The network's output on ``x`` with the averaged weights (when kept), dropout off."""
        self.net.eval()
        with torch.no_grad(), self._swapped():
            return np.concatenate([self.net(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy()
                                   for i in range(0, len(x), batch_size)])

    def eval_weights(self) -> dict[str, dict[str, np.ndarray]]:
        """The weights to evaluate and save: the averages when kept, else the raw weights."""
        with self._swapped():
            return self.net.weights()

    def state(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(model values: weights then averages, optimizer values: step, Adam's moments, then the
        importance sampler's per-image scores when the recipe samples)."""
        model = [p.detach().numpy().copy() for p in self.net.params] + [a.numpy().copy() for a in self.averages or []]
        optimizer = [np.array(self.step, np.int64)]
        for m, v in zip(self.optimizer.m, self.optimizer.v, strict=True):
            optimizer += [m.numpy().copy(), v.numpy().copy()]
        if self.sampler is not None:
            optimizer.append(self.sampler.scores.copy())
        return model, optimizer

    def load_state(self, model: list[np.ndarray], optimizer: list[np.ndarray], path) -> None:
        params = list(self.net.params)
        expected = [tuple(p.shape) for p in params] * (2 if self.averages is not None else 1)
        arrays = 1 + 2 * len(params) + (self.recipe.sample_fraction is not None)
        if [tuple(v.shape) for v in model] != expected or len(optimizer) != arrays:
            raise ModelFileError(
                f"{path}: the checkpoint holds model variables of shapes {[tuple(v.shape) for v in model]} and "
                f"{len(optimizer)} optimizer arrays, expected {expected} and {arrays} for this network and recipe "
                f"(sample_fraction={self.recipe.sample_fraction}). Fix: resume with the same spec and recipe, or start afresh."
            )
        if self.recipe.sample_fraction is not None:
            self.sampler = ImportanceSampler(len(optimizer[-1]), self.recipe.sample_fraction, self.recipe.sample_floor)
            self.sampler.scores[:] = optimizer[-1]
        with torch.no_grad():
            for p, v in zip(params, model[:len(params)], strict=True):
                p.copy_(torch.from_numpy(np.asarray(v, np.float32)))
            for a, v in zip(self.averages or [], model[len(params):], strict=True):
                a.copy_(torch.from_numpy(np.asarray(v, np.float32)))
        self.step = self.optimizer.iterations = int(optimizer[0])
        self.position = float(self.step)  # a sampled epoch sets its own from its index
        with torch.no_grad():
            for i, (m, v) in enumerate(zip(self.optimizer.m, self.optimizer.v, strict=True)):
                m.copy_(torch.from_numpy(np.asarray(optimizer[1 + 2 * i], np.float32)))
                v.copy_(torch.from_numpy(np.asarray(optimizer[2 + 2 * i], np.float32)))
