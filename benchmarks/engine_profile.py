"""Where the engine's time goes on the real models: each plan step, and its matmuls alone.

    .venv/bin/python benchmarks/engine_profile.py [--repeats 15] [--batch 64] [--models DIR] [--openblas-core auto]

For each real model of ``engine_mlperf.py`` (../shared/models), one chunk of seeded inputs (the chunk
``run_fast`` splits ``--batch`` into on one thread), NumPy's BLAS on one thread (threadpoolctl):
every step of the engine's plan timed on its own, in plan order (best of ``--repeats`` passes),
with the multiply-accumulates of the layers it runs, and the same step's matrix products timed
alone on copies of the very operands it multiplies (``np.matmul`` recorded while it runs). GMAC/s = MACs / time,
MACs being the layer's direct count (a conv in the Winograd form multiplies 16/36 of them). The
rows say how much of each step is BLAS and how fast BLAS runs on the step's shapes; read them
beside onnxruntime's whole-network rate from ``benchmarks/engine_mlperf.py``.

Then, per model, the plan's products once more, as one peer would run them: every recorded
product on contiguous copies of its operands through NumPy's ``np.matmul`` (OpenBLAS), and the
same products as one onnxruntime graph of ``MatMul`` nodes (MLAS, one thread; the bench extra's
onnxruntime and onnx), the operands that hold weights as the graph's constants (MLAS packs a
constant right operand once, when the session is made, as it does in a model's own graph) and
the others fed as inputs. Their ratio is how fast onnxruntime's own
matrix products are on the engine's shapes: the engine cannot beat it on a model whose time is
mostly products, whatever it does around them. No assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from engine_mlperf import MODELS  # the same real models, input ranges and architecture files

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--models", default=str(REPO.parent / "shared" / "models"))
    parser.add_argument("--openblas-core", metavar="NAME",
                        help="OPENBLAS_CORETYPE to run with: 'auto' unsets it (OpenBLAS picks its kernels for the CPU); "
                             "the script starts again with it, since OpenBLAS reads it when NumPy loads it")
    args = parser.parse_args()
    if args.openblas_core:
        wanted = None if args.openblas_core == "auto" else args.openblas_core
        environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        if wanted:
            environ["OPENBLAS_CORETYPE"] = wanted
        again = ["--repeats", str(args.repeats), "--batch", str(args.batch), "--models", args.models]
        os.execve(sys.executable, [sys.executable, sys.argv[0], *again], environ)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(1)  # after numpy is imported: before it, there is no BLAS to limit
    import layerlab
    from layerlab.engine import fast

    blas = next((i for i in threadpool_info() if i["user_api"] == "blas"), {})
    print(f"numpy {np.__version__}, {blas.get('internal_api')} {blas.get('version')} ({blas.get('architecture')} kernels), "
          f"1 thread{', OPENBLAS_CORETYPE=' + os.environ['OPENBLAS_CORETYPE'] if 'OPENBLAS_CORETYPE' in os.environ else ''}; "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}")
    ceilings = []
    for relative, (low, high, architecture) in MODELS.items():
        name = Path(relative).name
        net = layerlab.load(Path(args.models) / relative,
                            architecture=Path(args.models) / architecture if architecture else None)
        plan = fast.plan_for(net.spec)
        n = fast.even_chunk(args.batch, plan.solo_chunk)  # what run_fast gives one thread
        x = np.random.default_rng(0).uniform(low, high, (n, *net.spec.input_shape)).astype(np.float32)
        macs = _node_macs(net.spec, plan)
        prepared = plan.prepare(net.weights)
        constants = _arrays(prepared) + _arrays(net.weights)
        space = fast._Space()
        best: dict[int, float] = {}
        products: dict[int, list] = {}
        for repeat in range(args.repeats + 1):
            values = {"input": x}
            for index, node in enumerate(plan.nodes):
                space.slot = node.slot
                inputs = [values[v] for v in node.inputs]
                if repeat == 0:  # record the matmuls this step makes (operands copied)
                    calls: list = []
                    recorded = _recording(calls, constants)
                    np.matmul = recorded  # the steps call np.matmul: the same module object
                    try:
                        values[node.output] = node.run(inputs, prepared, node.overwrite, space)
                    finally:
                        np.matmul = _MATMUL
                    products[index] = calls
                else:
                    start = time.perf_counter()
                    values[node.output] = node.run(inputs, prepared, node.overwrite, space)
                    best[index] = min(best.get(index, float("inf")), time.perf_counter() - start)
                for v in node.last_reads:
                    values.pop(v, None)
        print(f"\n{name}: {n} images; plan steps in order")
        print("| step (its layer) | MACs per image | us per image | GMAC/s | matmuls alone, us per image | matmul GMAC/s |")
        print("|---|---|---|---|---|---|")
        total = matmul_total = 0.0
        for index, node in enumerate(plan.nodes):
            step = best[index] / n
            alone = _time_products(products[index], args.repeats) / n
            total += step
            matmul_total += alone
            m = macs.get(index, 0)
            rate = f"{m / step / 1e9:.1f}" if m else "-"
            mrate = f"{m / alone / 1e9:.1f}" if m and alone else "-"
            print(f"| {node.layer or node.output} | {m:,} | {step * 1e6:.2f} | {rate} | {alone * 1e6:.2f} | {mrate} |")
        print(f"| all steps | {net.spec.macs:,} | {total * 1e6:.2f} | {net.spec.macs / total / 1e9:.1f} | "
              f"{matmul_total * 1e6:.2f} | {net.spec.macs / matmul_total / 1e9:.1f} |")
        calls = [call for index in range(len(plan.nodes)) for call in products[index]]
        ceilings.append((name, total, matmul_total, *_peer_products(calls, args.repeats, n)))
    print("\nThe plan's products alone, contiguous operands, NumPy (OpenBLAS) against onnxruntime's MatMul (MLAS), "
          "one thread; us per image")
    print("| model | all steps | products, engine's layout | products, contiguous | onnxruntime MatMul | "
          "onnxruntime / NumPy time |")
    print("|---|---|---|---|---|---|")
    for name, total, alone, contiguous, peer, note in ceilings:
        ratio = f"{peer / contiguous:.2f}x" if peer else note
        peer_text = f"{peer * 1e6:.2f}" if peer else "-"
        print(f"| {name} | {total * 1e6:.2f} | {alone * 1e6:.2f} | {contiguous * 1e6:.2f} | {peer_text} | {ratio} |")
    return 0


def _peer_products(calls: list, repeats: int, n: int) -> tuple[float, float | None, str]:
    """Seconds per image for ``calls`` (``(a, b, out, fixed)`` as recorded) on contiguous copies:
    through ``np.matmul``, and as one onnxruntime graph of MatMul nodes fed the same operands
    (None, and why, when onnxruntime or onnx is missing), the two timed in turns."""
    operands = [(np.ascontiguousarray(a), np.ascontiguousarray(b), np.empty(out.shape, np.float32), fixed)
                for a, b, out, fixed in calls]
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        return _time_products(operands, repeats) / n, None, f"no onnxruntime ({exc.name})"
    nodes, inputs, constants, outputs, feed = [], [], [], [], {}
    for i, (a, b, out, fixed) in enumerate(operands):
        nodes.append(helper.make_node("MatMul", [f"a{i}", f"b{i}"], [f"o{i}"]))
        for name, value, constant in ((f"a{i}", a, fixed[0]), (f"b{i}", b, fixed[1])):
            if constant:
                constants.append(numpy_helper.from_array(value, name))
            else:
                inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
                feed[name] = value
        outputs.append(helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, out.shape))
    model = helper.make_model(helper.make_graph(nodes, "products", inputs, outputs, constants),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, feed)
    ours = peer = float("inf")
    for _ in range(repeats):
        ours = min(ours, _time_products(operands, 1))
        start = time.perf_counter()
        session.run(None, feed)
        peer = min(peer, time.perf_counter() - start)
    return ours / n, peer / n, ""


_MATMUL = np.matmul


def _recording(calls: list, constants: list[np.ndarray]):
    """An ``np.matmul`` that records copies of its operands, and whether each reads one of the
    ``constants`` (the weights and what the plan prepared from them)."""
    def matmul(a, b, out=None, **kwargs):
        fixed = tuple(any(np.may_share_memory(v, c) for c in constants) for v in (a, b))
        calls.append((_same_layout(a), _same_layout(b), None if out is None else _same_layout(out), fixed))
        return _MATMUL(a, b, out=out, **kwargs)
    return matmul


def _arrays(value) -> list[np.ndarray]:
    """The arrays in nested dicts, lists and tuples."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _arrays(v)]
    return []


def _same_layout(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` laid out as ``a`` is: the same strides into a copy of the buffer it views
    (a strided view of a padded input reads overlapping rows; a contiguous copy would not)."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root is a or not isinstance(root, np.ndarray):
        return np.array(a)
    offset = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    copy = np.array(root, order="K")
    return np.ndarray(a.shape, a.dtype, buffer=copy, offset=offset, strides=a.strides)


def _time_products(calls: list, repeats: int) -> float:
    if not calls:
        return 0.0
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for a, b, out, *_ in calls:
            _MATMUL(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return best


def _node_macs(spec, plan) -> dict[int, int]:
    """Plan step -> MACs per image of the spec layer it runs (a BN folded in or an activation
    fused in adds none)."""
    by_name = {info.layer.name: info.macs for info in spec.infos}
    return {index: by_name.get(node.layer, 0) for index, node in enumerate(plan.nodes)}


if __name__ == "__main__":
    sys.exit(main())
