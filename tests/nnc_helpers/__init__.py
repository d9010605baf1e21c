"""Build small NNC networks for tests/test_nnc.py and run nnabla on them in its own venv.

``NNCNet`` writes the NNablaProtoBuf directly (layerlab's schema and .nnp writer): nnabla then
reads these files as the oracle, so a writer bug fails there too. Only the input shape is
declared; nnabla infers the rest, so the importer's shape inference is checked against nnabla.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from layerlab.nnc import files, schema

ORACLE = Path(__file__).resolve().parents[1] / "nnabla_oracle.py"


class NNCNet:
    """A chain (or small graph) of NNC functions with seeded random parameters."""

    def __init__(self, input_shape: tuple[int, ...], seed: int = 0, name: str = "MainRuntime"):
        self.proto = schema.new("NNablaProtoBuf")
        self.network = self.proto.network.add(name=name, batch_size=1)
        self.rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = {}
        self.input_shape = tuple(input_shape)
        self.last = self._variable("x", (-1, *input_shape))
        self.counts: dict[str, int] = {}

    def _variable(self, name: str, shape=None, kind: str = "Buffer") -> str:
        var = self.network.variable.add(name=name, type=kind)
        if shape is not None:
            var.shape.dim.extend(shape)
        return name

    def param(self, name: str, shape: tuple[int, ...], low: float | None = None) -> str:
        array = self.rng.normal(0.0, 0.5, size=shape) if low is None else self.rng.uniform(low, 1.5, size=shape)
        self.params[name] = array.astype(np.float32)
        return self._variable(name, shape, "Parameter")

    def fn(self, kind: str, inputs: list[str] | None = None, field: str | None = None, **param) -> str:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        name = kind if n == 1 else f"{kind}_{n}"
        function = self.network.function.add(name=name, type=kind)
        function.input.extend(inputs if inputs is not None else [self.last])
        function.output.append(self._variable(name))
        if field:
            target = getattr(function, field)
            target.SetInParent()
            for key, value in param.items():
                if key in ("kernel", "stride", "pad", "dilation", "shape"):
                    getattr(target, key).dim.extend(value)
                elif key in ("axes",):
                    getattr(target, key).extend(value)
                else:
                    setattr(target, key, value)
        self.last = name
        return name

    # -- the functions used by the tests --------------------------------------------------------
    def conv(self, cin: int, filters: int, kernel, pad=(0, 0), stride=(1, 1), dilation=(1, 1), bias=True, x=None):
        name = f"conv{len(self.params)}"
        inputs = [x or self.last, self.param(f"{name}/conv/W", (filters, cin, *kernel))]
        if bias:
            inputs.append(self.param(f"{name}/conv/b", (filters,)))
        return self.fn("Convolution", inputs, "convolution_param", base_axis=1, pad=pad, stride=stride, dilation=dilation, group=1)

    def pool(self, kind: str, kernel, stride, pad=(0, 0), ignore_border=True, including_pad=None):
        field = "max_pooling_param" if kind == "MaxPooling" else "average_pooling_param"
        extra = {} if including_pad is None else {"including_pad": including_pad}
        return self.fn(kind, None, field, kernel=kernel, stride=stride, pad=pad, ignore_border=ignore_border, **extra)

    def affine(self, features: int, units: int, bias=True):
        name = f"fc{len(self.params)}"
        inputs = [self.last, self.param(f"{name}/affine/W", (features, units))]
        if bias:
            inputs.append(self.param(f"{name}/affine/b", (units,)))
        return self.fn("Affine", inputs, "affine_param", base_axis=1)

    def bn(self, channels: int, image: bool = True, eps: float = 1e-3):
        name = f"bn{len(self.params)}"
        shape = (1, channels, 1, 1) if image else (1, channels)
        inputs = [self.last, self.param(f"{name}/bn/beta", shape), self.param(f"{name}/bn/gamma", shape),
                  self.param(f"{name}/bn/mean", shape), self.param(f"{name}/bn/var", shape, low=0.2)]
        return self.fn("BatchNormalization", inputs, "batch_normalization_param", axes=[1], decay_rate=0.9, eps=eps, batch_stat=False)

    def act(self, kind: str):
        return self.fn(kind)

    def softmax(self, axis: int = 1):
        return self.fn("Softmax", None, "softmax_param", axis=axis)

    # -- output ---------------------------------------------------------------------------------
    def finish(self, output: str | None = None):
        executor = self.proto.executor.add(name="Executor", network_name=self.network.name)
        executor.data_variable.add(variable_name="x", data_name="x")
        executor.output_variable.add(variable_name=output or self.last, data_name="y")
        for name in self.params:
            executor.parameter_variable.add(variable_name=name)
        return self

    def write(self, path: Path) -> Path:
        Path(path).write_bytes(files.nnp_bytes(self.proto, self.params))
        return Path(path)

    def nnc_file(self) -> files.NNCFile:
        return files.NNCFile(proto=self.proto, parameters=dict(self.params), source="test network")


def run_oracle(python: str, jobs: list[dict], workdir: Path) -> dict:
    """Run tests/nnabla_oracle.py on ``jobs`` in the nnabla venv; return its results by job id."""
    jobs_path, results_path = workdir / "jobs.json", workdir / "results.json"
    jobs_path.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([python, str(ORACLE), str(jobs_path), str(results_path)], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0 or not results_path.exists():
        raise RuntimeError(f"nnabla oracle failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(results_path.read_text())


def graph_of(spec, computing_only: bool = False) -> dict[str, dict]:
    """A spec as a graph that does not depend on the order of its layers: layer name -> config
    with every input named. ``computing_only``: without initializers (NNC keeps its own) and with
    float constants rounded to float32 (NNC stores them so)."""
    graph = {}
    previous = "input"
    for layer in spec.layers:
        config = layer.to_dict()
        config["inputs"] = list(layer.inputs or (previous,))
        if computing_only:
            config = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in config.items() if not k.endswith("initializer")}
        graph[layer.name] = config
        previous = layer.name
    return graph
