"""C export of seed650: latency, RAM and flash of layerlab float32 / int8 beside keras2c 2.0.

    python benchmarks/c_export.py [MODEL.keras|.h5] [--data-dir DIR] [--images 1000] [--passes 15]
        [--keras2c-python /tmp/k2c-venv/bin/python --keras2c-include DIR] [--out DIR]

Everything runs in one go on the same images: each implementation's C harness loops over the
images and times itself with C's clock() (CPU time), one line per pass; the table shows the
median pass. Sizes come from `size` (x86, cc -O2) and `arm-none-eabi-size` (Cortex-M4F, -Os).

keras2c 2.0 needs TensorFlow/Keras and `pydantic<2` in a separate venv, e.g.

    python -m venv /tmp/k2c-venv && /tmp/k2c-venv/bin/pip install keras2c==2.0 "pydantic<2" tensorflow tf_keras

Its C library (include/*.c) is not in its PyPI packages; pass the folder holding it (keras2c's
repository, include/) with --keras2c-include. keras2c rejects channels_first, so it gets the
channels_last twin of seed650 (the same weights: the kernels are HWIO either way and both
Flatten orders are H-W-C). TFLite Micro is not built here (its sources and build system are not
reachable from this machine's package registries).

Without MODEL, seed650 gets seeded random weights (timings and sizes do not depend on the
values; the accuracy column then means nothing).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from layerlab.data import input_for_model, load_mnist  # noqa: E402
from layerlab.export.c import _export  # noqa: E402
from layerlab.export.c import toolchain as T  # noqa: E402
from layerlab.export.c.verify import deepest_stack  # noqa: E402
from layerlab.network import Network  # noqa: E402
from layerlab.presets import seed650  # noqa: E402

K2C_GENERATE = textwrap.dedent("""
    import os, sys
    import numpy as np
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras2c import k2c
    from keras2c.backend import keras
    w = np.load(sys.argv[1])
    L = keras.layers
    conv = dict(padding="valid", data_format="channels_last")
    pool = dict(pool_size=(2, 2), strides=(2, 2), padding="same", data_format="channels_last")
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        L.Conv2D(5, (4, 4), name="conv1", **conv), L.MaxPooling2D(name="maxpool1", **pool), L.Activation("tanh", name="tanh1"),
        L.Conv2D(3, (3, 3), name="conv2", **conv), L.MaxPooling2D(name="maxpool2", **pool), L.Activation("tanh", name="tanh2"),
        L.Conv2D(3, (4, 4), name="conv3", **conv), L.Activation("tanh", name="tanh3"),
        L.Flatten(name="flat1"), L.Dense(10, name="dense1"), L.Activation("softmax", name="softmax"),
    ])
    for name in ("conv1", "conv2", "conv3", "dense1"):
        model.get_layer(name).set_weights([w[name + "/kernel"], w[name + "/bias"]])
    print("keras", keras.__version__)
    k2c(model, "k2c_seed650", malloc=False, num_tests=0, verbose=False)
""")

K2C_HARNESS = textwrap.dedent("""
    /* Timing harness for keras2c's seed650, the same protocol as layerlab's main.c. */
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <time.h>
    #include "k2c_seed650.h"

    int main(int argc, char **argv)
    {
        static float input[784], output[10];
        k2c_tensor in = {input, 3, 784, {28, 28, 1, 1, 1}};
        k2c_tensor out = {output, 1, 10, {10, 1, 1, 1, 1}};
        long count = 0, pass, passes, i;
        float *images = NULL;
        double checksum = 0.0;
        FILE *f;
        if (argc != 4) { fprintf(stderr, "usage: k2c_bench PASSES IMAGES.bin OUTPUTS.bin\\n"); return 2; }
        passes = atol(argv[1]);
        f = fopen(argv[2], "rb");
        if (f == NULL) { return 1; }
        fseek(f, 0, SEEK_END);
        count = ftell(f) / (long)(784 * sizeof(float));
        fseek(f, 0, SEEK_SET);
        images = (float *)malloc((size_t)count * 784 * sizeof(float));
        if (images == NULL || fread(images, sizeof(float), (size_t)count * 784, f) != (size_t)count * 784) { return 1; }
        fclose(f);
        k2c_seed650_initialize();
        f = fopen(argv[3], "wb");
        for (i = 0; i < count; ++i) {
            memcpy(input, images + i * 784, sizeof(input));
            k2c_seed650(&in, &out);
            fwrite(output, sizeof(float), 10, f);
        }
        fclose(f);
        for (pass = 0; pass < passes; ++pass) {
            clock_t start = clock();
            for (i = 0; i < count; ++i) {
                memcpy(input, images + i * 784, sizeof(input));
                k2c_seed650(&in, &out);
                checksum += output[0];
            }
            printf("predict %.1f\\n", 1e9 * (double)(clock() - start) / CLOCKS_PER_SEC / (double)count);
        }
        printf("images %ld checksum %.6g\\n", count, checksum);
        k2c_seed650_terminate();
        free(images);
        return 0;
    }
""")


def run(cmd, cwd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def bench_lines(stdout: str) -> dict[str, float]:
    """Median ns per image of each timed function in a harness's --bench output."""
    times: dict[str, list[float]] = {}
    for line in stdout.splitlines():
        m = re.match(r"(predict(?:_q)?) ([0-9.]+)$", line.strip())
        if m:
            times.setdefault(m.group(1), []).append(float(m.group(2)))
    return {k: statistics.median(v) for k, v in times.items()}


def stack_of(su: Path) -> dict[str, int]:
    out = {}
    for line in su.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].strip().isdigit():
            out[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    return out


def arm_size(build: Path, sources: list[Path], name: str, include: Path | None = None) -> T.Sizes | None:
    if shutil.which(T.ARM_CC) is None:
        return None
    flags = [f for f in T.ARM_CFLAGS if f != "-Werror"] + list(T.ARM_FLOAT)
    objs = []
    for src in sources:
        obj = build / f"{name}-{src.stem}-cm4.o"
        run([T.ARM_CC, *flags, *(["-I", include] if include else []), "-c", src, "-o", obj], build)
        objs.append(obj)
    sizes = [T.size_of(T.ARM_SIZE, o) for o in objs]
    return T.Sizes(sum(s.text for s in sizes), sum(s.data for s in sizes), sum(s.bss for s in sizes))


def layerlab_row(network, label, out: Path, args, x: np.ndarray, labels: np.ndarray, int8: bool, mode: str = "lut") -> list[dict]:
    report = _export(network, out, name="seed650", int8=int8, calibration=args.calibration, verify=True,
                     verify_images=args.images, data_dir=args.data_dir, int8_activation=mode)
    text = report.read_text()
    build = out.parent / f"{out.name}-build"
    shutil.copytree(out, build)
    cc = T.host_compiler()
    run([cc, *T.HOST_CFLAGS, "-c", "seed650.c", "-o", "seed650.o"], build)
    run([cc, *T.HOST_CFLAGS, "-o", "seed650_test", "main.c", "seed650.o", "-lm"], build)
    x.tofile(build / "images.bin")
    run([build / "seed650_test", "images.bin", "outputs.bin"], build)
    outputs = np.fromfile(build / "outputs.bin", np.float32).reshape(len(x), -1)
    accuracy = 100 * float(np.mean(np.argmax(outputs, 1) == labels))
    times = bench_lines(run([build / "seed650_test", "--bench", args.passes, "images.bin"], build).stdout)
    host = T.size_of("size", build / "seed650.o")
    stack = (deepest_stack(cc, list(T.HOST_CFLAGS), build, "seed650") or (0, ""))[0]
    arm = arm_size(build, [build / "seed650.c"], "seed650")
    ram = int(re.search(r"^  total\s+(\d+)$", text, re.M).group(1))
    check = next((line.strip() for line in text.splitlines() if line.strip().startswith(("float32 on", "int8 on"))), "")
    rows = [dict(name=label, us=times["predict"] / 1000, ram=ram, stack=stack, host=host, arm=arm,
                 accuracy=accuracy, note=f"{label}: {check}")]
    if "predict_q" in times:
        rows.append(dict(name=label + ", predict_q only", us=times["predict_q"] / 1000, ram=ram, stack=stack,
                         host=host, arm=arm, accuracy=accuracy, note=""))
    return rows


def keras2c_row(network, args, work: Path, x: np.ndarray, reference: np.ndarray, labels) -> dict:
    """Generate keras2c's C for the channels_last twin, build it at -O2 and time it."""
    work.mkdir(parents=True)
    np.savez(work / "weights.npz", **{f"{layer}/{name}": a for layer, d in network.weights.items() for name, a in d.items()})
    (work / "generate.py").write_text(K2C_GENERATE)
    proc = run([args.keras2c_python, "generate.py", "weights.npz"], work, timeout=900)
    keras_version = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "keras ?"
    include = work / "include"  # keras2c's generated code includes "./include/k2c_include.h"
    shutil.copytree(Path(args.keras2c_include).resolve(), include)
    library = sorted(include.glob("*.c"))
    (work / "bench.c").write_text(K2C_HARNESS)
    cc = T.host_compiler()
    flags = ["-O2", "-I", include, "-I", work]  # keras2c's code is not -std=c99 -Werror clean; its own flags
    run([cc, *flags, "-fstack-usage", "-c", "k2c_seed650.c", "-o", "k2c_seed650.o"], work)
    objs = [work / "k2c_seed650.o"]
    for src in library:
        run([cc, *flags, "-c", src, "-o", work / f"{src.stem}.o"], work)
        objs.append(work / f"{src.stem}.o")
    run([cc, *flags, "-o", "k2c_bench", "bench.c", *objs, "-lm"], work)
    x_nhwc = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.shape[1] == 1 else x  # (N, 1, 28, 28) -> (N, 28, 28, 1)
    x_nhwc.astype(np.float32).tofile(work / "images.bin")
    times = bench_lines(run([work / "k2c_bench", args.passes, "images.bin", "outputs.bin"], work).stdout)
    outputs = np.fromfile(work / "outputs.bin", np.float32).reshape(len(x), 10)
    diff = float(np.max(np.abs(outputs - reference)))
    stack = stack_of(work / "k2c_seed650.su")
    host = [T.size_of("size", o) for o in objs]
    arm = arm_size(work, [work / "k2c_seed650.c", *library], "k2c", include)
    accuracy = 100 * float(np.mean(np.argmax(outputs, 1) == labels)) if labels is not None else None
    return dict(name=f"keras2c 2.0 ({keras_version}, channels_last twin)", us=times["predict"] / 1000, ram=0,
                stack=stack.get("k2c_seed650", sum(stack.values())),
                host=T.Sizes(sum(s.text for s in host), sum(s.data for s in host), sum(s.bss for s in host)),
                arm=arm, accuracy=accuracy, note=f"max |keras2c - engine| = {diff:.2g} on {len(x)} images")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="trained seed650 (.keras/.h5); seeded random weights without it")
    parser.add_argument("--data-dir", default=os.environ.get("LAYERLAB_DATA"))
    parser.add_argument("--images", type=int, default=1000, help="MNIST test images to time over (and verify on)")
    parser.add_argument("--passes", type=int, default=15, help="timed passes over the images; the median is shown")
    parser.add_argument("--calibration", type=int, default=1000)
    parser.add_argument("--keras2c-python", help="python of a venv with keras2c==2.0, pydantic<2, tensorflow")
    parser.add_argument("--keras2c-include", help="keras2c's include/ folder (its C library)")
    parser.add_argument("--out", help="keep the exports here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.model:
        import layerlab

        network = layerlab.load(args.model)
        source = f"trained, {args.model}"
    else:
        spec = seed650("channels_first")
        rng = np.random.default_rng(650)
        network = Network(spec, {i.layer.name: {n: (rng.standard_normal(s) * 0.3).astype(np.float32)
                                                for n, s in i.layer.weight_shapes(i.input_shapes[0]).items()}
                                 for i in spec.infos if i.params})
        source = "seeded random weights (no trained model given: accuracy is meaningless)"
    data = load_mnist(args.data_dir)
    x = input_for_model(data.x_test[: args.images], network.spec, scale=255.0)
    reference = network.predict(x)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="layerlab-c-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    labels = data.y_test[: args.images]
    rows = layerlab_row(network, "layerlab float32", work / "float32", args, x, labels, int8=False)
    rows += layerlab_row(network, "layerlab int8 (tanh table)", work / "int8", args, x, labels, int8=True)
    rows += layerlab_row(network, "layerlab int8 (tanh in float)", work / "int8-float", args, x, labels, int8=True, mode="float")
    float_acc = 100 * float(np.mean(np.argmax(network.predict(input_for_model(data.x_test, network.spec, 255.0)), 1) == data.y_test))
    notes = [r["note"] for r in rows if r.get("note")]
    if args.keras2c_python and args.keras2c_include:
        k2c = keras2c_row(network, args, work / "keras2c", x, reference, labels)
        rows.append(k2c)
        notes.append(f"keras2c: {k2c['note']}")
    else:
        notes.append("keras2c: not run (pass --keras2c-python and --keras2c-include)")
    notes.append("TFLite Micro: not built (its sources and Bazel/Make build are not reachable from this machine's registries)")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    print(f"seed650 ({source}); {args.images} MNIST test images x {args.passes} passes, median; {cpu}, {os.cpu_count()} CPUs; "
          f"{T.version(T.host_compiler())} {' '.join(T.HOST_CFLAGS)}")
    print(f"engine float accuracy on 10,000 test images: {float_acc:.2f}%")
    header = f"{'implementation':44} {'us/image':>9} {'static RAM':>10} {'stack':>7} {'x86 text+data':>13} {'M4 flash':>9} {'M4 RAM':>7} {'accuracy':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        arm = r["arm"]
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}%"
        arm_flash = arm.flash if arm else 0
        arm_ram = (arm.ram + (r["stack"] if r["ram"] == 0 else 0)) if arm else 0
        print(f"{r['name']:44} {r['us']:9.1f} {r['ram']:10d} {r['stack']:7d} {r['host'].flash:13d} "
              f"{arm_flash:9d} {arm_ram:7d} {accuracy:>9}")
    print("static RAM: layerlab's buffers (report.txt); keras2c keeps every activation on the stack instead. stack: x86, the")
    print("deepest call chain (gcc -fcallgraph-info; keras2c: its function's frame, -fstack-usage). M4 RAM: bss + data (+ stack")
    print("for keras2c; layerlab's M4 stack is in report.txt, about 120-210 B). M4 flash = text + data of the")
    print(f"objects (-Os, hard float), libm not counted. accuracy: on the {args.images} timed images; the exports' own checks:")
    for note in notes:
        print(note)
    print(f"exports and builds in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
