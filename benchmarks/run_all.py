"""Run every benchmark once (`make bench`); each writes its own JSON under benchmarks/results/."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = ["bench_spectralmoe_layer.py", "bench_heads.py", "bench_backbones.py", "bench_dilated_attention.py",
           "bench_predict.py", "bench_train_step.py"]

if __name__ == "__main__":
    failed = []
    for script in SCRIPTS:
        t0 = time.perf_counter()
        print(f"== {script}", flush=True)
        if subprocess.call([sys.executable, str(HERE / script)]) != 0:
            failed.append(script)
        print(f"== {script}: {time.perf_counter() - t0:.0f} s", flush=True)
    sys.exit(1 if failed else 0)
