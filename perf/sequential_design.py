"""The sequential evaluation design checked by simulation, against fixed seed counts.

For the design in params.yaml (alpha, min_seeds, max_seeds, parallel_trials as the step
between looks, screening on or off) it draws synthetic candidates (shared seed noise +
own trial noise, sd 1 each, so paired differences have sd sqrt(2)) and reports the
false-accept rate under no effect, the power at a few true effects, and the mean number
of candidate seeds used, next to fixed designs that test once at alpha.

    python perf/sequential_design.py [--params params.yaml] [--draws 100000]
"""

from __future__ import annotations

import argparse
import math

from autolab.config import load_params
from autolab.stats import Design, simulate


def row(name: str, design: Design, effects: list[float], draws: int) -> str:
    h0 = simulate(design, 0.0, draws=draws, seed=1)
    cells = [f"{h0['accept_rate']:.4f} [{h0['ci_low']:.4f}, {h0['ci_high']:.4f}]",
             f"{h0['mean_seeds']:.2f}"]
    for i, effect in enumerate(effects):
        h1 = simulate(design, effect, draws=draws, seed=2 + i)
        cells += [f"{h1['accept_rate']:.3f}", f"{h1['mean_seeds']:.2f}"]
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--draws", type=int, default=100_000)
    a = ap.parse_args()
    ev = load_params(a.params).evaluation
    sd_diff = math.sqrt(2.0)
    effects = [1.0 * sd_diff, 1.5 * sd_diff, 2.0 * sd_diff]
    seq = Design(ev.alpha, ev.min_seeds, ev.max_seeds, ev.parallel_trials, False)
    designs = [
        (f"sequential, looks at {seq.looks()}", seq),
        ("sequential + one-seed screening", Design(ev.alpha, ev.min_seeds, ev.max_seeds,
                                                    ev.parallel_trials, True)),
    ]
    for n in range(ev.min_seeds, ev.max_seeds + 1):
        designs.append((f"fixed {n} seeds", Design(ev.alpha, n, n)))
    head = ["design", "false accepts (95% CI)", "seeds (no effect)"]
    for e in effects:
        head += [f"power d={e / sd_diff:.1f}", "seeds"]
    print(f"alpha {ev.alpha}; nominal levels per look: "
          f"{[round(seq.nominal_alpha(k), 5) for k in seq.looks()]}; {a.draws} draws each; "
          "effects d in sd of paired differences")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, d in designs:
        print(row(name, d, effects, a.draws))


if __name__ == "__main__":
    main()
