"""What a recipe's training costs per step, next to another's: the compress stage of each recipe run
for ``--steps`` steps (pruning schedule, distillation and data as the recipe says), the recipes taking
turns for ``--rounds`` rounds in one process so that machine load hits all alike; prints the median
seconds per step and the ratio to the first recipe. A demo recipe's wall time then scales from a
measured run of the first one.

Run:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/step_cost.py recipes/minilm-embed.yaml other.yaml --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def seconds_per_step(recipe_path: Path, steps: int, work: Path) -> float:
    from hubcompress.pipeline import open_run, run_stages
    from hubcompress.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    data = recipe.model_dump(mode="json", exclude_none=True)
    data["training"]["steps"] = steps
    if recipe.pruning and recipe.pruning.schedule:  # the whole schedule inside the steps timed
        data["pruning"]["schedule"]["interval_steps"] = max(1, steps // (2 * recipe.pruning.schedule.total_times))
    short = type(recipe).model_validate(data)
    short._source = recipe._source
    ctx = open_run(None, short, work / recipe_path.stem, fresh=True, progress=False)
    result = run_stages(ctx, only=["compress"])
    return result.report["compression"]["seconds"] / result.report["compression"]["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", type=Path, nargs="+")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from machine import cpu_name

    times: dict[Path, list[float]] = {path: [] for path in args.recipes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for path in args.recipes:
                times[path].append(seconds_per_step(path, args.steps, Path(tmp)))
    first = statistics.median(times[args.recipes[0]])
    print(f"CPU: {cpu_name()}; {args.steps} steps per run, {args.rounds} rounds")
    for path, values in times.items():
        median = statistics.median(values)
        print(f"{path}: {median:.2f} s/step (runs: {', '.join(f'{v:.2f}' for v in values)}), {median / first:.2f}x")


if __name__ == "__main__":
    main()
