"""The subset of nnabla's ``NNablaProtoBuf`` messages that layerlab reads and writes.

The descriptors are built here in Python (``descriptor_pb2.FileDescriptorProto``) in a private
descriptor pool, so neither protoc nor nnabla is needed. Field names and numbers are facts of the
format, as nnabla 1.39.0 defines them in ``src/nbla/proto/nnabla.proto`` (generated from
``nnabla.proto.tmpl`` and ``functions.yaml``: a function's ``<snake>_param`` field number is
1001 + the function's index in functions.yaml). ``tests/test_nnc.py`` checks every field below
against nnabla's own descriptors.

Only what a network, its parameters and its executor need is described. Parsing with
``allow_unknown_field`` skips the rest (dataset, optimizer, monitor, other functions' params);
binary parsing keeps unknown fields as unknown.
"""

from __future__ import annotations

import functools
from typing import Any

# (name, number, type, repeated, message type or None).
_Field = tuple[str, int, str, bool, str | None]

# Parameter messages of the functions that the importer or exporter use, by function type:
# (field name in Function, its number, the fields of ``<type>Parameter``).
FUNCTION_PARAMS: dict[str, tuple[str, int, list[_Field]]] = {
    "Affine": ("affine_param", 1001, [("base_axis", 1, "int64", False, None)]),
    "Convolution": ("convolution_param", 1005, [
        ("base_axis", 1, "int64", False, None),
        ("pad", 2, "message", False, "Shape"),
        ("stride", 3, "message", False, "Shape"),
        ("dilation", 4, "message", False, "Shape"),
        ("group", 5, "int64", False, None),
        ("channel_last", 6, "bool", False, None),
    ]),
    "MaxPooling": ("max_pooling_param", 1012, [
        ("kernel", 1, "message", False, "Shape"),
        ("stride", 2, "message", False, "Shape"),
        ("ignore_border", 3, "bool", False, None),
        ("pad", 4, "message", False, "Shape"),
        ("channel_last", 5, "bool", False, None),
    ]),
    "AveragePooling": ("average_pooling_param", 1013, [
        ("kernel", 1, "message", False, "Shape"),
        ("stride", 2, "message", False, "Shape"),
        ("ignore_border", 3, "bool", False, None),
        ("pad", 4, "message", False, "Shape"),
        ("channel_last", 5, "bool", False, None),
        ("including_pad", 6, "bool", False, None),
    ]),
    "ReLU": ("relu_param", 1022, [("inplace", 1, "bool", False, None)]),
    "Softmax": ("softmax_param", 1024, [("axis", 1, "int64", False, None)]),
    "BatchNormalization": ("batch_normalization_param", 1042, [
        ("axes", 1, "int64", True, None),
        ("decay_rate", 2, "float", False, None),
        ("eps", 3, "float", False, None),
        ("batch_stat", 4, "bool", False, None),
        ("no_scale", 5, "bool", False, None),
        ("no_bias", 6, "bool", False, None),
    ]),
    "DepthwiseConvolution": ("depthwise_convolution_param", 1007, [
        ("base_axis", 1, "int64", False, None),
        ("pad", 2, "message", False, "Shape"),
        ("stride", 3, "message", False, "Shape"),
        ("dilation", 4, "message", False, "Shape"),
        ("multiplier", 5, "int64", False, None),
    ]),
    "Add2": ("add2_param", 1065, [("inplace", 1, "bool", False, None)]),
    "Sub2": ("sub2_param", 1068, [("inplace", 1, "bool", False, None)]),
    "Mul2": ("mul2_param", 1069, [("inplace", 1, "bool", False, None)]),
    "AddScalar": ("add_scalar_param", 1073, [("val", 1, "double", False, None), ("inplace", 2, "bool", False, None)]),
    "MulScalar": ("mul_scalar_param", 1074, [("val", 1, "double", False, None), ("inplace", 2, "bool", False, None)]),
    "Concatenate": ("concatenate_param", 1133, [("axis", 1, "int64", False, None)]),
    "Pad": ("pad_param", 1137, [
        ("pad_width", 1, "int64", True, None),
        ("mode", 2, "string", False, None),
        ("constant_value", 3, "float", False, None),
    ]),
    "Slice": ("slice_param", 1136, [
        ("start", 1, "int64", True, None),
        ("stop", 2, "int64", True, None),
        ("step", 3, "int64", True, None),
    ]),
    "Unpooling": ("unpooling_param", 1016, [("kernel", 1, "message", False, "Shape"), ("channel_last", 2, "bool", False, None)]),
    "Reshape": ("reshape_param", 1146, [("shape", 1, "message", False, "Shape"), ("inplace", 2, "bool", False, None)]),
    "Dropout": ("dropout_param", 1173, [("p", 1, "double", False, None), ("seed", 2, "int64", False, None)]),
}

MESSAGES: dict[str, list[_Field]] = {
    "Shape": [("dim", 1, "int64", True, None)],
    "Context": [
        ("backends", 1, "string", True, None),
        ("array_class", 2, "string", False, None),
        ("device_id", 3, "string", False, None),
    ],
    "GlobalConfig": [("default_context", 1, "message", False, "Context")],
    "NNablaProtoBuf": [
        ("version", 1, "string", False, None),
        ("global_config", 2, "message", False, "GlobalConfig"),
        ("network", 100, "message", True, "Network"),
        ("parameter", 200, "message", True, "Parameter"),
        ("executor", 600, "message", True, "Executor"),
    ],
    "Network": [
        ("name", 1, "string", False, None),
        ("batch_size", 10, "int64", False, None),
        ("variable", 100, "message", True, "Variable"),
        ("function", 200, "message", True, "Function"),
    ],
    "Variable": [
        ("name", 1, "string", False, None),
        ("type", 2, "string", False, None),
        ("repeat_id", 3, "string", True, None),
        ("shape", 20, "message", False, "Shape"),
        ("initializer", 100, "message", False, "Initializer"),
    ],
    "Initializer": [("type", 2, "string", False, None), ("multiplier", 10, "float", False, None)],
    "Parameter": [
        ("variable_name", 1, "string", False, None),
        ("shape", 20, "message", False, "Shape"),
        ("data", 100, "float", True, None),
        ("need_grad", 101, "bool", False, None),
    ],
    "Executor": [
        ("name", 1, "string", False, None),
        ("network_name", 10, "string", False, None),
        ("num_evaluations", 20, "int64", False, None),
        ("repeat_evaluation_type", 21, "string", False, None),
        ("need_back_propagation", 30, "bool", False, None),
        ("data_variable", 50, "message", True, "DataVariable"),
        ("generator_variable", 60, "message", True, "GeneratorVariable"),
        ("loss_variable", 70, "message", True, "LossVariable"),
        ("output_variable", 80, "message", True, "OutputVariable"),
        ("parameter_variable", 90, "message", True, "ParameterVariable"),
        ("no_image_normalization", 101, "bool", False, None),
    ],
    "DataVariable": [("variable_name", 1, "string", False, None), ("data_name", 3, "string", False, None)],
    "GeneratorVariable": [
        ("variable_name", 1, "string", False, None),
        ("type", 2, "string", False, None),
        ("multiplier", 3, "float", False, None),
    ],
    "LossVariable": [("variable_name", 1, "string", False, None)],
    "OutputVariable": [
        ("variable_name", 1, "string", False, None),
        ("type", 2, "string", False, None),
        ("data_name", 3, "string", False, None),
    ],
    "ParameterVariable": [
        ("variable_name", 1, "string", False, None),
        ("learning_rate_multiplier", 2, "float", False, None),
    ],
    "Function": [
        ("name", 1, "string", False, None),
        ("type", 2, "string", False, None),
        ("repeat_id", 3, "string", True, None),
        ("context", 10, "message", False, "Context"),
        ("input", 20, "string", True, None),
        ("output", 30, "string", True, None),
    ],
}

_PACKAGE = "layerlab_nnc"


def _file_descriptor():
    from google.protobuf import descriptor_pb2

    fdp = descriptor_pb2.FileDescriptorProto(name="layerlab_nnc_subset.proto", package=_PACKAGE, syntax="proto3")
    kinds = {
        "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
        "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
        "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
        "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        "message": descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    }

    def add(name: str, fields: list[_Field]):
        msg = fdp.message_type.add(name=name)
        for fname, number, kind, repeated, type_name in fields:
            f = msg.field.add(name=fname, number=number, type=kinds[kind])
            f.label = f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
        return msg

    for name, fields in MESSAGES.items():
        msg = add(name, fields)
        if name == "Function":
            # nnabla: ``oneof parameter { <Type>Parameter <snake>_param = 1001 + index; }``
            msg.oneof_decl.add(name="parameter")
            for kind, (fname, number, _) in FUNCTION_PARAMS.items():
                f = msg.field.add(name=fname, number=number, type=kinds["message"], oneof_index=0)
                f.label = f.LABEL_OPTIONAL
                f.type_name = f".{_PACKAGE}.{kind}Parameter"
    for kind, (_, _, fields) in FUNCTION_PARAMS.items():
        add(f"{kind}Parameter", fields)
    return fdp


@functools.lru_cache(maxsize=1)
def messages() -> dict[str, Any]:
    """Message classes by name (``NNablaProtoBuf``, ``Network``, ...), built once.

    Raises:
        MissingExtraError: the ``protobuf`` package is not installed.
    """
    from layerlab.errors import require

    require("google.protobuf", "nnc", "Neural Network Console files")
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    fdp = _file_descriptor()
    pool.AddSerializedFile(fdp.SerializeToString())
    file_desc = pool.FindFileByName(fdp.name)
    get = getattr(message_factory, "GetMessageClass", None)
    classes = {}
    for name in file_desc.message_types_by_name:
        desc = file_desc.message_types_by_name[name]
        classes[name] = get(desc) if get else message_factory.MessageFactory(pool).GetPrototype(desc)
    return classes


def new(name: str, **kwargs: Any):
    """A new message of type ``name`` (e.g. ``new("Shape", dim=[1, 28, 28])``)."""
    return messages()[name](**kwargs)
