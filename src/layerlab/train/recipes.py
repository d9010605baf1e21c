"""Training recipes: every hyper-parameter of a run in one frozen dataclass.

``seed`` is the seed author's exact recipe; ``fast`` is the recipe measured to bring seed650 to
98.0% test accuracy fastest and most reliably with the architecture unchanged, ``fast-v1`` its
predecessor (benchmarks/TRAINING_LOG.md has every experiment behind them). Keras is imported only by ``make_optimizer``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from layerlab.errors import SpecError

# Mean and standard deviation of the MNIST training pixels / 255 (all 60000 images). Input
# standardisation uses these two scalars so that it folds exactly into the first layer.
MNIST_MEAN = 0.1306604762738429
MNIST_STD = 0.30810780385646264

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine")


@dataclass(frozen=True)
class Recipe:
    """How to train: optimizer, schedule, batch size, epochs, averaging, input scaling.

    Attributes:
        name: 'seed', 'fast' or a custom name.
        description: one line for run.json and the CLI help.
        optimizer: 'adam' or 'adamw' (Keras' own classes).
        learning_rate: the constant rate, or the peak of 'warmup_cosine'.
        schedule: 'constant', or 'warmup_cosine': linear warm-up from ``initial_learning_rate``
            to ``learning_rate`` over ``warmup_fraction`` of all steps, then cosine decay to
            ``final_learning_rate`` (keras.optimizers.schedules.CosineDecay with warm-up).
        initial_learning_rate: start of the warm-up.
        final_learning_rate: end of the cosine decay.
        warmup_fraction: share of all training steps spent warming up.
        beta_1, beta_2, epsilon: Adam's moments and epsilon (Keras defaults 0.9, 0.999, 1e-7).
        weight_decay: AdamW's decoupled weight decay (ignored by 'adam').
        batch_size: images per step.
        epochs: default number of epochs (``--epochs`` overrides it).
        standardize: train on (pixels/255 - MNIST_MEAN) / MNIST_STD and fold the two scalars back
            into the first layer's weights afterwards, so the saved model takes pixels/255.
            Exact only for a first Conv2D with padding='valid' (every tap reads a real pixel) or
            a first Dense; other first layers train on pixels/255 unchanged.
        ema_momentum: keep an exponential moving average of the weights (Keras' ``use_ema``) and
            evaluate and save the averaged weights; None trains and saves the raw weights.
            Short runs use a shorter average (``effective_ema_momentum``).
        label_smoothing: of the categorical cross-entropy (0 = none).
        kernel_initializer, bias_initializer: override the spec's initializers for training
            (the saved model keeps the spec's layer config); None keeps the spec's.
        distill_epochs: train a throwaway teacher CNN for this many epochs first and train on
            ``(1 - distill_weight) * one_hot + distill_weight * softmax(teacher_logits /
            distill_temperature)`` (see ``layerlab.train.distill``); 0 trains on the labels.
        distill_temperature, distill_weight: the softening and the teacher's share.
        distill_learning_rate, distill_schedule: the teacher's Adam rate (batch 128), constant or
            'warmup_cosine' (warm-up from a tenth over 5% of its steps, cosine to 0). A constant
            rate ends wherever the last batches left it: 2 epochs at 2e-3 gave teachers of
            97.7-98.7% test accuracy, cosine 3 epochs at 4e-3 99.0-99.2% (benchmarks/TRAINING_LOG.md).
        steps_per_execution: training steps per compiled call (Python overhead only; the
            result is the same for any value).
        sample_fraction: importance sampling (``layerlab.train.sampling``): after the first
            epoch, each epoch trains on about this share of the training images, drawn with
            probabilities that follow each image's last output error and weighted so that the
            expected gradient is the full one; None trains on every image. The torch trainer
            only: Keras' fit trains on every image.
        sample_floor: the smallest drawing probability of an image under importance sampling.
        starts: initialisations trained for every run (seeds ``start_seed``); the one whose saved
            epoch has the best validation accuracy is the run's model (the test set never
            chooses). With the torch trainer they train side by side in threads, the cores shared
            out between them: on 2 cores two one-thread starts take about 1.5x the time of one
            start on both (benchmarks/TRAINING_LOG.md), so a second start costs half a run.
    """

    name: str
    description: str
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    initial_learning_rate: float = 1e-3
    final_learning_rate: float = 0.0
    warmup_fraction: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 20
    standardize: bool = False
    ema_momentum: float | None = None
    label_smoothing: float = 0.0
    kernel_initializer: str | None = None
    bias_initializer: str | None = None
    distill_epochs: int = 0
    distill_temperature: float = 3.0
    distill_weight: float = 0.5
    distill_learning_rate: float = 2e-3
    distill_schedule: str = "constant"
    steps_per_execution: int = 16
    sample_fraction: float | None = None
    sample_floor: float = 0.05
    starts: int = 1

    def __post_init__(self) -> None:
        where = f"recipe '{self.name}'"
        if self.optimizer not in OPTIMIZERS:
            raise SpecError(f"{where}: optimizer={self.optimizer!r} is not known, expected one of {OPTIMIZERS}.")
        if not (isinstance(self.starts, int) and self.starts >= 1):
            raise SpecError(f"{where}: starts={self.starts!r}, expected a positive int (1 = one initialisation per run).")
        if self.distill_schedule not in SCHEDULES:
            raise SpecError(f"{where}: distill_schedule={self.distill_schedule!r} is not known, expected one of {SCHEDULES}.")
        if not self.distill_learning_rate > 0:
            raise SpecError(f"{where}: distill_learning_rate={self.distill_learning_rate!r}, expected > 0.")
        if self.schedule not in SCHEDULES:
            raise SpecError(f"{where}: schedule={self.schedule!r} is not known, expected one of {SCHEDULES}.")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise SpecError(f"{where}: batch_size={self.batch_size!r}, expected a positive int. Fix: --batch-size 64.")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise SpecError(f"{where}: epochs={self.epochs!r}, expected a positive int. Fix: --epochs 20.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise SpecError(f"{where}: warmup_fraction={self.warmup_fraction!r}, expected 0 <= value < 1.")
        if self.ema_momentum is not None and not 0.0 < self.ema_momentum < 1.0:
            raise SpecError(f"{where}: ema_momentum={self.ema_momentum!r}, expected None or 0 < value < 1.")
        if not (isinstance(self.distill_epochs, int) and self.distill_epochs >= 0):
            raise SpecError(f"{where}: distill_epochs={self.distill_epochs!r}, expected an int >= 0 (0 = no teacher).")
        if not 0.0 <= self.distill_weight <= 1.0 or not self.distill_temperature > 0:
            raise SpecError(
                f"{where}: distill_weight={self.distill_weight!r} and distill_temperature={self.distill_temperature!r}, "
                f"expected 0 <= weight <= 1 and temperature > 0."
            )
        if not self.learning_rate > 0:
            raise SpecError(f"{where}: learning_rate={self.learning_rate!r}, expected > 0.")
        if self.sample_fraction is not None and not 0.0 < self.sample_fraction < 1.0:
            raise SpecError(
                f"{where}: sample_fraction={self.sample_fraction!r}, expected None (every image) or 0 < value < 1. "
                "Fix: sample_fraction=0.4."
            )
        bound = "sample_fraction" if self.sample_fraction is not None else "1"
        if not 0.0 < self.sample_floor <= (self.sample_fraction or 1.0):
            raise SpecError(
                f"{where}: sample_floor={self.sample_floor!r}, expected 0 < floor <= {bound} ({self.sample_fraction or 1.0}). "
                "Fix: sample_floor=0.05."
            )

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"recipe: unknown fields {unknown}, expected some of {sorted(known)}.")
        return cls(**data)


SEED = Recipe(
    name="seed",
    description="the seed author's: Adam() defaults, batch 64, categorical cross-entropy, pixels/255, "
    "the spec's initializers; he ran 2000 epochs",
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=64,
    epochs=20,
)

# The fast recipe of issue 2 (until issue 16), kept so that benchmarks/train_seed650.py can run it
# beside its successor: one start, 300 epochs, a teacher trained 2 epochs at a constant rate.
FAST_V1 = Recipe(
    name="fast-v1",
    description="the fast recipe until issue 16: Adam, linear warm-up 1e-3 -> 1e-2 then cosine to 0, batch 256, "
    "standardised input folded into conv1, EMA of the weights, bias initializer zeros, soft targets from a 2-epoch "
    "teacher CNN at a constant 2e-3 (distillation, temperature 3, weight 0.5), importance sampling of 40% of the "
    "images in every epoch after the first, one start",
    optimizer="adam",
    learning_rate=1e-2,
    schedule="warmup_cosine",
    initial_learning_rate=1e-3,
    final_learning_rate=0.0,
    warmup_fraction=0.1,
    batch_size=256,
    epochs=300,
    standardize=True,
    ema_momentum=0.999,
    bias_initializer="zeros",
    distill_epochs=2,
    distill_temperature=3.0,
    distill_weight=0.5,
    sample_fraction=0.4,
    sample_floor=0.05,
)

# Chosen from the experiments in benchmarks/TRAINING_LOG.md (section 5): a teacher that ends its
# schedule (99.0-99.2% instead of 97.7-98.7%), and two starts side by side instead of 300 epochs.
FAST = FAST_V1.replace(
    name="fast",
    description="Adam, linear warm-up 1e-3 -> 1e-2 then cosine to 0, batch 256, standardised input folded into conv1, "
    "EMA of the weights, bias initializer zeros, soft targets from a 3-epoch teacher CNN (Adam 4e-3, warm-up then "
    "cosine; distillation, temperature 3, weight 0.5), importance sampling of 40% of the images in every epoch after "
    "the first (torch trainer; Keras' fit trains every image), two starts side by side (one core each), the better on "
    "validation kept",
    epochs=200,
    distill_epochs=3,
    distill_learning_rate=4e-3,
    distill_schedule="warmup_cosine",
    starts=2,
)

RECIPES = {recipe.name: recipe for recipe in (SEED, FAST, FAST_V1)}


def get_recipe(name: str) -> Recipe:
    """The built-in recipe called ``name``.

    Raises:
        SpecError: no such recipe.
    """
    if name not in RECIPES:
        raise SpecError(f"recipe {name!r} is not known, expected one of {', '.join(RECIPES)}. Fix: --recipe seed or --recipe fast.")
    return RECIPES[name]


def start_seed(seed: int, start: int) -> int:
    """The seed of start ``start`` (0-based) of the run with ``seed``: start 0 is the run's own
    seed (one start trains exactly as before starts existed); the others lie far from the seeds
    ``--runs`` uses (seed, seed + 1, ...)."""
    return seed + 100_000 * start


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last batch may be partial)."""
    return math.ceil(num_images / batch_size)


def run_steps(recipe: Recipe, num_images: int, epochs: int) -> int:
    """Optimizer steps of a whole run, which the schedule spans.

    With importance sampling the first epoch sees every image and the others about
    ``sample_fraction * num_images``. The number an epoch draws varies, so the torch trainer
    moves each sampled epoch through exactly its nominal share of these steps, whatever the
    number of steps it takes.
    """
    full = steps_per_epoch(num_images, recipe.batch_size)
    if recipe.sample_fraction is None or epochs <= 0:
        return max(epochs, 0) * full
    return full + (epochs - 1) * steps_per_epoch(max(1, round(recipe.sample_fraction * num_images)), recipe.batch_size)


def effective_ema_momentum(recipe: Recipe, total_steps: int) -> float | None:
    """The EMA momentum used: the recipe's, shortened for short runs.

    An average over the last 1 / (1 - momentum) steps lags the weights; in a run of a few
    hundred steps (``--epochs 2`` on a subset) 0.999 would still be near the initial weights.
    The averaging horizon is therefore at most a tenth of the run.
    """
    if recipe.ema_momentum is None:
        return None
    return max(0.0, min(recipe.ema_momentum, 1.0 - 10.0 / max(total_steps, 1)))


def learning_rate_at(recipe: Recipe, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based), as ``make_optimizer``'s Keras schedule
    computes it (keras.optimizers.schedules.CosineDecay with warm-up); no Keras needed.
    """
    if recipe.schedule != "warmup_cosine":
        return recipe.learning_rate
    warmup_steps = int(recipe.warmup_fraction * total_steps)
    alpha = recipe.final_learning_rate / recipe.learning_rate
    if warmup_steps and step < warmup_steps:
        return recipe.initial_learning_rate + (recipe.learning_rate - recipe.initial_learning_rate) * step / warmup_steps
    # Without warm-up Keras decays from learning_rate itself over all steps.
    decay_steps = max(total_steps - warmup_steps, 1)
    done = min(step - warmup_steps, decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * done / decay_steps))
    return recipe.learning_rate * ((1.0 - alpha) * cosine + alpha)


def make_optimizer(keras, recipe: Recipe, total_steps: int):
    """The Keras optimizer (with its learning-rate schedule) for ``recipe``.

    Args:
        keras: the keras module (layerlab.keras_build.import_keras()).
        recipe: the recipe.
        total_steps: optimizer steps of the whole run (``run_steps``); the schedule
            reads the optimizer's own step counter, so it resumes where it stopped.
    """
    warmup_steps = int(recipe.warmup_fraction * total_steps)
    if recipe.schedule == "warmup_cosine" and warmup_steps == 0:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate, decay_steps=max(total_steps, 1),
            alpha=recipe.final_learning_rate / recipe.learning_rate,
        )
    elif recipe.schedule == "warmup_cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.initial_learning_rate,
            decay_steps=max(total_steps - warmup_steps, 1),
            alpha=recipe.final_learning_rate / recipe.learning_rate,
            warmup_target=recipe.learning_rate,
            warmup_steps=warmup_steps,
        )
    else:
        learning_rate = recipe.learning_rate
    kwargs = dict(
        learning_rate=learning_rate, beta_1=recipe.beta_1, beta_2=recipe.beta_2, epsilon=recipe.epsilon,
        use_ema=recipe.ema_momentum is not None,
        ema_momentum=effective_ema_momentum(recipe, total_steps) if recipe.ema_momentum is not None else 0.99,
    )
    base = keras.optimizers.AdamW if recipe.optimizer == "adamw" else keras.optimizers.Adam
    if recipe.optimizer == "adamw":
        kwargs["weight_decay"] = recipe.weight_decay

    class Optimizer(base):
        # Keras' fit() ends by overwriting the model's weights with the EMA averages. layerlab
        # calls fit() once per epoch, so that would restart every epoch from the averages;
        # the training loop evaluates and saves the averages itself instead.
        def finalize_variable_values(self, var_list):
            pass

    Optimizer.__name__ = base.__name__
    return Optimizer(**kwargs)
