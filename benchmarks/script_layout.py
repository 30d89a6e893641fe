"""How each script reads: its length, where its first equation starts, how long `main` is, and what share of its
non-blank lines is run plumbing rather than algorithm.

    python benchmarks/script_layout.py                         # this checkout
    python benchmarks/script_layout.py --folder /tmp/before    # another (a worktree of an earlier commit)

Plumbing counts the top-level definitions named in PLUMBING (flag checks, the run's build and main, sweeps, logging
helpers, CPU workarounds, environment and evaluation plumbing, under their names before and after the harness moved
them), the imports from common/, module-level calls, the `__main__` block, and in Args the run flags (those of
common.cli.RunFlags), their docstrings and the class's resume rules and methods. The rule is the same for every
commit, so figures compare across the move.
"""

import ast
from dataclasses import dataclass
from pathlib import Path

import tyro

FIRST_EQUATION = {
    "mirl_gymnax.py": "soft_value",
    "mirl_atari.py": "soft_value",
    "misa_d4rl.py": "log_one_minus_tanh_squared",
}
PLUMBING = {
    *("SCRIPT", "flag_problems", "build", "main", "load_policy", "stacked_hypers", "only_configuration"),
    *("INTERVALS_PER_CHUNK", "SWEPT_FLAGS", "log_every", "live_seeds_only", "Trainer"),
    # the same roles in the scripts before the harness
    *("check_args", "RESUMABLE", "report_evaluation", "without_seed_axis", "Run", "swept", "grid_runs", "Dense"),
    *("PatchConv", "open_pools", "reset_pools", "sharded_env_step", "atari_env_ids", "check_env_id", "make_pool"),
    *("pool_seeds", "make_env", "CONTINUOUS_ENV_IDS", "BYTE_GRID_ENV_IDS", "replay_obs_dtype", "with_domain_defaults"),
    *("ActionBox", "evaluation_seeds", "evaluate", "ObsScaler", "LayerNorm", "hidden_init", "output_init"),
}
ARGS_PLUMBING = {
    *("RESUMABLE", "EXTENSION_NOTE", "BUDGET", "steps_per_iteration", "num_runs", "problems", "__post_init__"),
    # the run flags
    *("exp_name", "seed", "num_seeds", "cpu_devices", "num_processes", "process_id", "coordinator_address", "track"),
    *("wandb_project_name", "wandb_entity", "save_model", "checkpoint_interval", "keep_checkpoints", "resume"),
    "log_interval",
}


@dataclass
class Args:
    folder: Path = Path(__file__).resolve().parents[1]
    """the checkout whose scripts are measured"""


def plumbing_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()

    def mark(node: ast.AST) -> None:
        start = node.lineno - len(getattr(node, "decorator_list", []))
        lines.update(range(start, node.end_lineno + 1))

    for node in tree.body:
        names = []
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [target.id for target in node.targets if isinstance(target, ast.Name)]
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("common"):
            mark(node)
        elif isinstance(node, ast.If) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
            mark(node)  # the __main__ block; module-level calls
        elif set(names) & PLUMBING:
            mark(node)
        if isinstance(node, ast.ClassDef) and node.name == "Args":
            for index, item in enumerate(node.body):
                target = getattr(item, "target", None)
                name = item.name if isinstance(item, ast.FunctionDef) else getattr(target, "id", None)
                if name in ARGS_PLUMBING:
                    mark(item)
                    following = node.body[index + 1] if index + 1 < len(node.body) else None
                    if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                        mark(following)  # the flag's docstring
    return lines


def main(args: Args) -> None:
    print("| script | lines | first equation at line | main, lines | plumbing, non-blank lines |")
    print("|-|-|-|-|-|")
    for name, equation in FIRST_EQUATION.items():
        source = (args.folder / name).read_text()
        tree = ast.parse(source)
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        main_lines = functions["main"].end_lineno - functions["main"].lineno + 1
        nonblank = [number for number, line in enumerate(source.splitlines(), 1) if line.strip()]
        plumbing = plumbing_lines(tree) & set(nonblank)
        share = f"{len(plumbing)} of {len(nonblank)} ({100 * len(plumbing) / len(nonblank):.0f} %)"
        print(f"| {name} | {len(source.splitlines())} | {functions[equation].lineno} | {main_lines} | {share} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
