"""Peak memory of one training step (forward + backward, loss = sum of outputs): rnnfast vs PyTorch.

Each measurement runs in a fresh process: the framework is imported and the inputs and the model are
made; then the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), the resident size is
noted, and three training steps run. Reported: the peak resident size reached during the steps minus
that baseline (what a training step needs on top of the model and its data, first-call allocations
included), and the whole process's peak. Linux only. Run: ``python bench/memory.py [--shapes ...]``.
"""
import argparse
import json
import resource
import subprocess
import sys

SHAPES = {"small": (32, 50, 64, 128), "medium": (64, 100, 128, 256), "large": (128, 100, 512, 512)}


def _worker(framework, cell, shape):
    import numpy as np

    B, T, I, H = SHAPES[shape]
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    if framework == "rnnfast":
        import rnnfast as rf

        m = (rf.nn.LSTM if cell == "lstm" else rf.nn.GRU)(I, H, seed=0)

        def step():
            out, _ = m(x)
            m.backward(np.ones_like(out))
    else:
        import torch

        torch.set_num_threads(2)
        m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H, batch_first=True)
        xt = torch.from_numpy(x).requires_grad_(True)

        def step():
            out, _ = m(xt)
            out.sum().backward()
            xt.grad = None
            m.zero_grad(set_to_none=False)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark (VmHWM)
    base = _status("VmRSS")
    for _ in range(3):
        step()
    peak = _status("VmHWM")
    print(json.dumps({"framework": framework, "cell": cell, "shape": shape,
                      "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "growth_kib": peak - base}))


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small,medium,large")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--worker", nargs=3, metavar=("FRAMEWORK", "CELL", "SHAPE"))
    a = ap.parse_args()
    if a.worker:
        _worker(*a.worker)
        return
    rows = []
    print("| cell | shape | rnnfast step MiB | torch step MiB | rnnfast process peak MiB | torch process peak MiB |")
    print("|---|---|---|---|---|---|")
    for cell in a.cells.split(","):
        for shape in a.shapes.split(","):
            res = {}
            for fw in ("rnnfast", "torch"):
                p = subprocess.run([sys.executable, __file__, "--worker", fw, cell, shape],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    res[fw] = None
                    continue
                res[fw] = json.loads(p.stdout.strip().splitlines()[-1])
            rows.append(res)

            def f(fw, key):
                return f"{res[fw][key] / 1024:.1f}" if res.get(fw) else "n/a"

            print(f"| {cell} | {shape} | {f('rnnfast', 'growth_kib')} | {f('torch', 'growth_kib')} | "
                  f"{f('rnnfast', 'peak_kib')} | {f('torch', 'peak_kib')} |")


if __name__ == "__main__":
    main()
