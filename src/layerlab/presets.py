"""Built-in network specs. ``seed650`` is the reference network of SEED_NETWORK.md."""

from __future__ import annotations

from layerlab.spec import CHANNELS_FIRST, Activation, Conv2D, Dense, Flatten, MaxPooling2D, Model


def seed650(
    data_format: str = CHANNELS_FIRST,
    kernel_initializer: str = "glorot_normal",
    bias_initializer: str = "ones",
) -> Model:
    """The seed author's 650-parameter MNIST CNN, every Keras argument as he wrote it.

    Args:
        data_format: 'channels_first' (as written, input (1, 28, 28)) or 'channels_last'
            (input (28, 28, 1)); the computation is the same, only layouts differ.
        kernel_initializer: 'glorot_normal' as written; 'nnc_glorot_normal' for NNC's.
        bias_initializer: 'ones' as written; 'zeros' is NNC's default.
    """
    conv = dict(
        strides=(1, 1), padding="valid", data_format=data_format, dilation_rate=(1, 1),
        activation="linear", use_bias=True, kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
    )
    pool = dict(pool_size=(2, 2), strides=(2, 2), padding="same", data_format=data_format)
    input_shape = (1, 28, 28) if data_format == CHANNELS_FIRST else (28, 28, 1)
    return Model(
        name="seed650",
        input_shape=input_shape,
        layers=(
            Conv2D(name="conv1", filters=5, kernel_size=(4, 4), **conv),
            MaxPooling2D(name="maxpool1", **pool),
            Activation(name="tanh1", activation="tanh"),
            Conv2D(name="conv2", filters=3, kernel_size=(3, 3), **conv),
            MaxPooling2D(name="maxpool2", **pool),
            Activation(name="tanh2", activation="tanh"),
            Conv2D(name="conv3", filters=3, kernel_size=(4, 4), **conv),
            Activation(name="tanh3", activation="tanh"),
            Flatten(name="flat1", data_format=data_format),
            Dense(name="dense1", units=10, activation="linear", use_bias=True,
                  kernel_initializer=kernel_initializer, bias_initializer=bias_initializer),
            Activation(name="softmax", activation="softmax"),
        ),
    )


PRESETS = {"seed650": seed650}
