"""How long `import course_helpers` takes in a fresh interpreter (target: under 0.5 s).

    python benchmarks/import_time.py [--runs 7]

Prints the median wall time of a fresh interpreter that imports the package (and the
CLI module), of a bare interpreter as the baseline, and of `import pandas` for scale;
then the import's own cost and the ratio against the pandas import, last.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def median_wall(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    bare = median_wall("pass", args.runs)
    ours = median_wall("import course_helpers, course_helpers.cli, course_helpers.supervisor",
                       args.runs)
    pandas = median_wall("import pandas", args.runs)
    print(f"{'interpreter start':<34}{bare * 1000:8.1f} ms")
    print(f"{'+ import course_helpers (+cli)':<34}{ours * 1000:8.1f} ms")
    print(f"{'+ import pandas (for scale)':<34}{pandas * 1000:8.1f} ms")
    own = max(ours - bare, 0.0)
    print(f"import_course_helpers_s={own:.3f}  (target < 0.5)")
    print(f"ratio_import_vs_pandas={own / max(pandas - bare, 1e-9):.2f}")


if __name__ == "__main__":
    main()
