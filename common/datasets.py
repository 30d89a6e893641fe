"""Offline datasets from files: D4RL HDF5 files, Minari datasets, and custom D4RL-format files (such as
those `python -m common.make_dataset` writes), the arrays a learner trains on as the official MISA code
prepares them (`training_arrays`: actions in [−1, 1], rewards shaped per domain), and evaluation.

    transitions, info = load_dataset("hopper-medium-v2")           # D4RL name: cached, else downloaded
    transitions, info = load_dataset("mujoco/hopper/medium-v0")    # Minari id (anything with a "/")
    transitions, info = load_dataset("my-data", dataset_path="data/pendulum-random.hdf5")  # custom file
    envs = make_eval_envs(info, num_envs=10)
    scores = normalized_score(info, episode_returns)

D4RL files are looked for in D4RL's own cache, `$D4RL_DATASET_DIR` or `~/.d4rl/datasets`, under the
basename of their URL, and downloaded there when missing. The URLs are D4RL's, under
http://rail.eecs.berkeley.edu/datasets/offline_rl; set `D4RL_DATASET_URL_ROOT` to download from a mirror
with the same layout instead.
"""

import contextlib
import dataclasses
import difflib
import json
import os
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from common.errors import UserError

DOMAINS = ("locomotion", "antmaze", "kitchen", "adroit")
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
D4RL_URL_ROOT = "http://rail.eecs.berkeley.edu/datasets/offline_rl"


class DatasetError(UserError, ValueError):
    """A dataset that cannot be found, read or used, with what to do about it."""


@dataclasses.dataclass(frozen=True)
class Transitions:
    """One row per transition, numpy arrays."""

    observations: np.ndarray  # float32 [N, obs_dim]
    actions: np.ndarray  # float32 [N, act_dim], raw (not clipped)
    rewards: np.ndarray  # float32 [N], raw (no per-domain transform)
    next_observations: np.ndarray  # float32 [N, obs_dim]
    terminals: np.ndarray  # float32 [N], 1.0 where the episode truly terminated (timeouts are not terminals)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str  # what the user passed: D4RL name, Minari id, custom name or file path
    domain: str  # one of DOMAINS
    ref_min_score: float | None  # reference returns for the normalised score; None if unknown
    ref_max_score: float | None
    eval_env_id: str | None  # gymnasium id to evaluate on; None if not evaluable
    minari_id: str | None  # set for Minari datasets: evaluation uses minari's recovered environment


# --- the D4RL table -------------------------------------------------------------------------------
# Transcribed from d4rl/infos.py (DATASET_URLS, REF_MIN_SCORE, REF_MAX_SCORE) in the public
# Farama-Foundation/D4RL repository; URL paths are relative to D4RL_URL_ROOT. The Minari ids name
# Minari's copies of the datasets whose environments need the `d4rl` package (antmaze v2 →
# D4RL/antmaze/*-v1, adroit v1 → D4RL/<task>/*-v2, kitchen v0 → D4RL/kitchen/*-v2).


@dataclasses.dataclass(frozen=True)
class _D4rlDataset:
    url_path: str
    domain: str
    ref_min_score: float
    ref_max_score: float
    eval_env_id: str | None
    eval_env_kwargs: dict
    minari_id: str | None


def _d4rl_table() -> dict[str, _D4rlDataset]:
    table = {}
    # gymnasium's v4 MuJoCo envs give the observation layout of D4RL's v2 locomotion data (Ant only with its
    # contact forces: 111 numbers)
    locomotion = {  # env: (ref min, ref max, eval env, eval env kwargs)
        "halfcheetah": (-280.178953, 12135.0, "HalfCheetah-v4", {}),
        "hopper": (-20.272305, 3234.3, "Hopper-v4", {}),
        "walker2d": (1.629008, 4592.3, "Walker2d-v4", {}),
        "ant": (-325.6, 3879.7, "Ant-v4", {"use_contact_forces": True}),
    }
    for env, (ref_min, ref_max, eval_env_id, kwargs) in locomotion.items():
        for kind in ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert"):
            url_path = f"gym_mujoco_v2/{env}_{kind.replace('-', '_')}-v2.hdf5"
            table[f"{env}-{kind}-v2"] = _D4rlDataset(
                url_path, "locomotion", ref_min, ref_max, eval_env_id, kwargs, None
            )

    antmaze = {  # name: (maze, multistart, multigoal) in the file name
        "umaze": ("u-maze", False, False),
        "umaze-diverse": ("u-maze", True, True),
        "medium-play": ("big-maze", True, False),
        "medium-diverse": ("big-maze", True, True),
        "large-play": ("hardest-maze", True, False),
        "large-diverse": ("hardest-maze", True, True),
    }
    for kind, (maze, multistart, multigoal) in antmaze.items():
        url_path = f"ant_maze_v2/Ant_maze_{maze}_noisy_multistart_{multistart}_multigoal_{multigoal}_sparse_fixed.hdf5"
        minari_id = f"D4RL/antmaze/{kind}-v1"
        table[f"antmaze-{kind}-v2"] = _D4rlDataset(url_path, "antmaze", 0.0, 1.0, None, {}, minari_id)

    adroit = {
        "pen": (96.262799, 3076.8331017826877),
        "hammer": (-274.856578, 12794.134825156867),
        "relocate": (-6.425911, 4233.877797728884),
        "door": (-56.512833, 2880.5693087298737),
    }
    for task, (ref_min, ref_max) in adroit.items():
        for kind in ("human", "cloned", "expert"):
            url_path = f"hand_dapg_v1/{task}-{kind}-v1.hdf5"
            minari_id = f"D4RL/{task}/{kind}-v2"
            table[f"{task}-{kind}-v1"] = _D4rlDataset(url_path, "adroit", ref_min, ref_max, None, {}, minari_id)

    kitchen = {
        "complete": "kitchen/mini_kitchen_microwave_kettle_light_slider-v0.hdf5",
        "partial": "kitchen/kitchen_microwave_kettle_light_slider-v0.hdf5",
        "mixed": "kitchen/kitchen_microwave_kettle_bottomburner_light-v0.hdf5",
    }
    for kind, url_path in kitchen.items():
        minari_id = f"D4RL/kitchen/{kind}-v2"
        table[f"kitchen-{kind}-v0"] = _D4rlDataset(url_path, "kitchen", 0.0, 4.0, None, {}, minari_id)
    return table


D4RL_DATASETS = _d4rl_table()


# --- public API -----------------------------------------------------------------------------------


def load_dataset(env_id: str, dataset_path: str | None = None) -> tuple[Transitions, DatasetInfo]:
    """Transitions and their DatasetInfo for a D4RL name, a Minari id (contains "/"), or a custom
    D4RL-format file (`dataset_path`, or an id ending in .hdf5/.h5 that is the file's path)."""
    if env_id in D4RL_DATASETS:
        entry = D4RL_DATASETS[env_id]
        path = Path(dataset_path) if dataset_path is not None else _cached_d4rl_file(env_id, entry)
        recorded = _custom_file_info(env_id, path).eval_env_id if dataset_path is not None else None
        if recorded is not None and recorded != entry.eval_env_id:
            raise DatasetError(
                f"{path} records data of {recorded}, but {env_id} is a D4RL dataset of {entry.eval_env_id}: the run "
                "would be named after one environment and train on another; name it after its own data, e.g. "
                f"--env-id {path.stem}"
            )
        info = DatasetInfo(env_id, entry.domain, entry.ref_min_score, entry.ref_max_score, entry.eval_env_id, None)
        return _qlearning_transitions(_read_d4rl_file(path)), info
    if dataset_path is not None or env_id.endswith((".hdf5", ".h5")):
        path = Path(dataset_path if dataset_path is not None else env_id)
        arrays = _read_d4rl_file(path)
        return _qlearning_transitions(arrays), _custom_file_info(env_id, path)
    if "/" in env_id:
        return _load_minari(env_id)
    raise unknown_dataset(env_id)


def dataset_domain(env_id: str, dataset_path: str | None = None) -> str:
    """The domain (one of DOMAINS) that load_dataset reports for these arguments, without reading the data: a
    custom file's comes from its attributes."""
    if env_id in D4RL_DATASETS:
        return D4RL_DATASETS[env_id].domain
    if dataset_path is not None or env_id.endswith((".hdf5", ".h5")):
        return _custom_file_info(env_id, Path(dataset_path if dataset_path is not None else env_id)).domain
    if "/" in env_id:
        return _minari_domain(env_id)
    raise unknown_dataset(env_id)


def unknown_dataset(env_id: str) -> DatasetError:
    close = difflib.get_close_matches(env_id, D4RL_DATASETS, n=3)
    return DatasetError(
        f"unknown dataset {env_id!r}"
        + (f" (did you mean {', '.join(close)}?)" if close else "")
        + ". Use a D4RL name such as hopper-medium-v2, halfcheetah-medium-replay-v2, walker2d-medium-expert-v2, "
        "antmaze-umaze-v2, pen-human-v1 or kitchen-complete-v0 (all: common.datasets.D4RL_DATASETS); "
        "a Minari id such as mujoco/hopper/medium-v0; or a D4RL-format file with --dataset-path "
        "(python -m common.make_dataset writes one)."
    )


def make_eval_envs(info: DatasetInfo, num_envs: int) -> gym.vector.VectorEnv:
    """A sync vector env of `num_envs` copies of the dataset's evaluation env, observations flattened
    the way the dataset's are."""
    if info.minari_id is not None:
        import minari

        dataset = minari.load_dataset(info.minari_id)

        def make_env() -> gym.Env:
            return dataset.recover_environment(eval_env=True)

    elif info.eval_env_id is not None:
        entry = D4RL_DATASETS.get(info.name)
        kwargs = entry.eval_env_kwargs if entry is not None else {}

        def make_env() -> gym.Env:
            return gym.make(info.eval_env_id, **kwargs)

    elif info.name in D4RL_DATASETS:
        raise DatasetError(
            f"{info.name} cannot be evaluated here: its environment needs the `d4rl` package (mujoco-py, "
            f"gym<0.25), which does not install on current Python. Train without evaluation (--eval-episodes 0, "
            f"with --save-model to keep the policy), or use Minari's copy of the dataset, whose environment "
            f"gymnasium can build: --env-id {D4RL_DATASETS[info.name].minari_id}"
        )
    else:
        raise DatasetError(
            f"dataset {info.name} names no environment to evaluate on: give its HDF5 file a root attribute "
            "env_id (a gymnasium id), as python -m common.make_dataset does"
        )

    def make_flat_env() -> gym.Env:
        return gym.wrappers.FlattenObservation(make_env())

    try:  # one copy first, so that a package that cannot build it fails here with the dataset's name
        first = make_flat_env()
    except Exception as error:
        raise DatasetError(
            f"the evaluation environment of {info.name} could not be built ({type(error).__name__}: {error}); "
            "pass --eval-episodes 0 to train without evaluating"
        ) from error
    return gym.vector.SyncVectorEnv([lambda: first] + [make_flat_env] * (num_envs - 1))


def check_against_env(data: Transitions, info: DatasetInfo, envs: gym.vector.VectorEnv) -> None:
    """Refuse a dataset whose observations or actions are not the size of its evaluation environment's."""
    obs_size = int(np.prod(envs.single_observation_space.shape))
    action_size = int(np.prod(envs.single_action_space.shape))
    if data.observations.shape[1] != obs_size or data.actions.shape[1] != action_size:
        raise DatasetError(
            f"{info.name}: its observations have {data.observations.shape[1]} values and its actions "
            f"{data.actions.shape[1]}, but its evaluation environment ({info.minari_id or info.eval_env_id}) has "
            f"{obs_size} and {action_size}: is the file another task's? (--eval-episodes 0 trains without evaluating)"
        )


def action_box(info: DatasetInfo, actions: np.ndarray, clip: float) -> "ActionBox":
    """The box of the dataset's actions (action_bounds), warning with their count and the largest excess where
    actions lie outside it (the learner clips them to ±`clip` of the box)."""
    box = ActionBox(*action_bounds(info, actions.shape[1]))
    outside = ((actions < box.low) | (actions > box.high)).any(axis=1)
    if outside.any():
        excess = np.maximum(box.low - actions, actions - box.high).max()
        warnings.warn(
            f"{outside.sum()} of the dataset's {len(outside)} actions lie outside the action box "
            f"[{box.low.min()}, {box.high.max()}] (by up to {excess:.3g}): the learner clips them to ±{clip} of the "
            "box",
            stacklevel=2,
        )
    return box


def action_bounds(info: DatasetInfo, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The box (low, high) of the dataset's actions, known whether or not the run evaluates: D4RL's own
    tasks all act in [−1, 1] (their antmaze, adroit and kitchen envs cannot be built here); a Minari
    dataset records its action space; otherwise one evaluation env is built to read it."""
    if info.minari_id is None and info.name in D4RL_DATASETS:
        return -np.ones(action_dim, np.float32), np.ones(action_dim, np.float32)
    if info.minari_id is not None:
        import minari

        space = minari.load_dataset(info.minari_id).action_space
    else:
        envs = make_eval_envs(info, 1)
        space = envs.single_action_space
        envs.close()
    return np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)


def normalized_score(info: DatasetInfo, returns: np.ndarray) -> np.ndarray | None:
    """D4RL's normalised score 100·(R − R_min)/(R_max − R_min); None without reference returns."""
    if info.ref_min_score is None or info.ref_max_score is None:
        return None
    return (
        100.0 * (np.asarray(returns, dtype=np.float64) - info.ref_min_score) / (info.ref_max_score - info.ref_min_score)
    )


# --- D4RL-format files ----------------------------------------------------------------------------


def _d4rl_cache_dir() -> Path:
    # the same place d4rl itself caches its downloads (d4rl/offline_env.py), read at call time
    return Path(os.environ.get("D4RL_DATASET_DIR", os.path.expanduser("~/.d4rl/datasets")))


def _cached_d4rl_file(name: str, entry: _D4rlDataset) -> Path:
    url = os.environ.get("D4RL_DATASET_URL_ROOT", D4RL_URL_ROOT).rstrip("/") + "/" + entry.url_path
    path = _d4rl_cache_dir() / Path(entry.url_path).name
    if not path.is_file():
        _download(name, url, path)
    return path


def _download(name: str, url: str, path: Path) -> None:
    """Stream `url` to `<path>.part`, check it is whole and a D4RL file, then move it into place, so
    that `path` only ever holds a complete file."""
    partial = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else None
            received = 0
            with tqdm(total=expected, unit="B", unit_scale=True, desc=f"downloading {name}") as progress:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
        if expected is not None and received != expected:
            raise OSError(f"the connection closed after {received} of {expected} bytes")
        _check_file_keys(partial)
        os.replace(partial, path)
    except Exception as error:
        raise DatasetError(
            f"could not download D4RL dataset {name} from {url} ({error}); nothing was saved at {path}. "
            f"Try again, or fetch the file yourself and pass it with --dataset-path."
        ) from error
    finally:
        partial.unlink(missing_ok=True)


def import_h5py():
    """h5py, which the d4rl extra installs (imported here, so that --help works without it)."""
    try:
        import h5py
    except ImportError as error:
        raise UserError('reading HDF5 datasets needs h5py: pip install -e ".[d4rl]"') from error
    return h5py


def _check_file_keys(path: Path) -> None:
    if not path.is_file():
        raise DatasetError(
            f"no dataset file at {path}. D4RL names download their file by themselves; for your own data, "
            f"write one with `python -m common.make_dataset --output {path}`."
        )
    h5py = import_h5py()
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path} is not an HDF5 file (a D4RL dataset is one)")
    with _open_hdf5(path) as file:
        missing = [key for key in REQUIRED_KEYS if key not in file]
    if missing:
        raise DatasetError(f"{path} lacks the D4RL key(s) {', '.join(missing)} (needs {', '.join(REQUIRED_KEYS)})")


def _unreadable(path: Path, error: OSError) -> DatasetError:
    return DatasetError(
        f"{path} cannot be read as HDF5 ({error}); it may be cut short: delete it and download or write it again"
    )


@contextlib.contextmanager
def _open_hdf5(path: Path):
    try:
        file = import_h5py().File(path, "r")
    except OSError as error:
        raise _unreadable(path, error) from error
    with file:
        yield file


def _read_d4rl_file(path: Path) -> dict[str, np.ndarray]:
    """The required arrays of a D4RL-format file, validated: one row per step, all finite."""
    _check_file_keys(path)
    with _open_hdf5(path) as file:
        try:
            arrays = {key: file[key][()] for key in REQUIRED_KEYS}
        except OSError as error:
            raise _unreadable(path, error) from error
    lengths = {key: len(array) for key, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"{path}: the keys have different lengths: {lengths}")
    num_rows = lengths["observations"]
    arrays["observations"] = arrays["observations"].reshape(num_rows, -1).astype(np.float32)
    arrays["actions"] = arrays["actions"].reshape(num_rows, -1).astype(np.float32)
    for key in ("rewards", "terminals", "timeouts"):
        if arrays[key].size != num_rows:  # [N, 1] is accepted, as d4rl does
            raise DatasetError(f"{path}: {key} has shape {arrays[key].shape}; expected one value per row ({num_rows})")
        arrays[key] = arrays[key].reshape(num_rows)
    arrays["rewards"] = arrays["rewards"].astype(np.float32)
    _check_finite(str(path), arrays)
    for key in ("terminals", "timeouts"):
        not_flags = ~np.isin(arrays[key], (0, 1))
        if not_flags.any():
            first = np.flatnonzero(not_flags)[:5].tolist()
            raise DatasetError(
                f"{path}: {key} must be 0/1 flags; {not_flags.sum()} row(s) are not (first: {first}, "
                f"values {arrays[key][first].tolist()})"
            )
    if num_rows < 2:
        raise DatasetError(f"{path}: {num_rows} row(s) make no transition")
    return arrays


def _check_finite(source: str, arrays: dict[str, np.ndarray]) -> None:
    for key in ("observations", "actions", "rewards"):
        bad_rows = ~np.isfinite(arrays[key].reshape(len(arrays[key]), -1)).all(axis=1)
        if bad_rows.any():
            first = np.flatnonzero(bad_rows)[:5].tolist()
            raise DatasetError(f"{source}: {key} has NaN/inf in {bad_rows.sum()} row(s) (first: {first})")


def _qlearning_transitions(arrays: dict[str, np.ndarray]) -> Transitions:
    """What `d4rl.qlearning_dataset(env, terminate_on_end=False)` returns: rows 0..N-2, each with the
    next row's observation, except the last step of every episode cut by a timeout (its next row
    starts a new episode); terminals are kept as the done flag. Row N-1 is never a transition."""
    keep = np.flatnonzero(~arrays["timeouts"][:-1].astype(bool))
    return Transitions(
        observations=arrays["observations"][keep],
        actions=arrays["actions"][keep],
        rewards=arrays["rewards"][keep],
        next_observations=arrays["observations"][keep + 1],
        terminals=arrays["terminals"][keep].astype(np.float32),
    )


def _custom_file_info(name: str, path: Path) -> DatasetInfo:
    with _open_hdf5(path) as file:
        attrs = dict(file.attrs)

    def text(key: str) -> str | None:
        value = attrs.get(key)
        if isinstance(value, bytes):
            return value.decode()
        return None if value is None else str(value)

    def number(key: str) -> float | None:
        return float(attrs[key]) if key in attrs else None

    domain = text("domain") or "locomotion"
    if domain not in DOMAINS:
        raise DatasetError(f"{path}: attribute domain={domain!r} is not one of {DOMAINS}")
    return DatasetInfo(name, domain, number("ref_min_score"), number("ref_max_score"), text("env_id"), None)


# --- Minari ---------------------------------------------------------------------------------------


def _minari_domain(dataset_id: str) -> str:
    if dataset_id.startswith("D4RL/antmaze"):
        return "antmaze"
    if dataset_id.startswith("D4RL/kitchen"):
        return "kitchen"
    if dataset_id.startswith(("D4RL/door", "D4RL/pen", "D4RL/hammer", "D4RL/relocate")):
        return "adroit"
    return "locomotion"  # mujoco/... and anything else: rewards used as they are


def _load_minari(dataset_id: str) -> tuple[Transitions, DatasetInfo]:
    import minari  # only Minari users need it

    # local datasets are used as they are; a missing one is downloaded (minari 0.5: load_dataset(download=True))
    try:
        dataset = minari.load_dataset(dataset_id, download=True)
    except Exception as error:  # minari raises network, registry and storage errors of many types
        raise DatasetError(
            f"Minari dataset {dataset_id} is not stored locally and could not be downloaded ({type(error).__name__}: "
            f"{error}). Where there is network, `minari download {dataset_id}` fetches it (it needs minari[hf], which "
            f'`pip install -e ".[d4rl]"` installs) into $MINARI_DATASETS_PATH or ~/.minari/datasets; '
            "`minari list remote` lists the ids"
        ) from error
    if not isinstance(dataset.action_space, gym.spaces.Box):
        raise DatasetError(f"Minari dataset {dataset_id}: actions must be a Box space, not {dataset.action_space}")
    parts: dict[str, list[np.ndarray]] = {field.name: [] for field in dataclasses.fields(Transitions)}
    for episode in dataset.iterate_episodes():
        # an episode of T steps has T+1 observations: the row after each step is its next observation
        observations = _flatten_batch(dataset.observation_space, episode.observations)
        parts["observations"].append(observations[:-1])
        parts["next_observations"].append(observations[1:])
        parts["actions"].append(np.asarray(episode.actions, dtype=np.float32).reshape(len(episode), -1))
        parts["rewards"].append(np.asarray(episode.rewards, dtype=np.float32))
        parts["terminals"].append(np.asarray(episode.terminations, dtype=np.float32))
    if not parts["rewards"]:
        raise DatasetError(f"Minari dataset {dataset_id} has no episodes")
    transitions = Transitions(**{key: np.concatenate(values) for key, values in parts.items()})
    _check_finite(f"Minari dataset {dataset_id}", dataclasses.asdict(transitions))

    metadata = dataset.storage.metadata
    eval_spec = metadata.get("eval_env_spec")
    eval_env_id = json.loads(eval_spec)["id"] if eval_spec else dataset.env_spec.id if dataset.env_spec else None
    info = DatasetInfo(
        name=dataset_id,
        domain=_minari_domain(dataset_id),
        ref_min_score=float(metadata["ref_min_score"]) if "ref_min_score" in metadata else None,
        ref_max_score=float(metadata["ref_max_score"]) if "ref_max_score" in metadata else None,
        eval_env_id=eval_env_id,
        minari_id=dataset_id,
    )
    return transitions, info


def _flatten_batch(space: gym.Space, batch) -> np.ndarray:
    """`gymnasium.spaces.flatten` applied to every row of a batch ([n, ...] arrays, nested in dicts and
    tuples like the space), as float32 [n, flat_dim] — the layout FlattenObservation gives the eval env."""
    if isinstance(space, gym.spaces.Box):
        batch = np.asarray(batch)
        return batch.reshape(len(batch), -1).astype(np.float32)
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([_flatten_batch(sub, batch[key]) for key, sub in space.spaces.items()], axis=1)
    if isinstance(space, gym.spaces.Tuple):
        return np.concatenate(
            [_flatten_batch(sub, part) for sub, part in zip(space.spaces, batch, strict=True)], axis=1
        )
    if isinstance(space, gym.spaces.Discrete):
        indices = np.asarray(batch).reshape(-1) - space.start
        return np.eye(space.n, dtype=np.float32)[indices]
    raise DatasetError(f"cannot flatten observations of space {space} (supported: Box, Dict, Tuple, Discrete)")


# --- the learner's arrays --------------------------------------------------------------------


def shaped_rewards(rewards: np.ndarray, domain: str) -> np.ndarray:
    """The official code's reward shaping: antmaze (r − 0.5)·4; kitchen and adroit rescaled to [−1, 1]."""
    if domain == "antmaze":
        return (rewards - 0.5) * 4.0
    if domain in ("kitchen", "adroit"):
        unit = (rewards - rewards.min()) / max(rewards.max() - rewards.min(), 1e-8)
        return (unit - 0.5) * 2.0
    return rewards


def training_arrays(
    data: Transitions, info: DatasetInfo, box: "ActionBox", action_clip: float, normalize_obs: bool
) -> tuple[Transitions, "ObsScaler"]:
    """The float32 arrays a learner trains on: actions mapped from the box into [−1, 1] and clipped to
    ±`action_clip` (so that a tanh-Gaussian's log-probability of each is finite), rewards shaped per domain,
    observations standardised with `normalize_obs`; and the observation scaler that evaluation must apply too."""
    scale = ObsScaler.fit(data.observations, normalize_obs)
    arrays = Transitions(
        observations=scale(data.observations),
        actions=np.clip(box.to_unit(data.actions), -action_clip, action_clip),
        rewards=shaped_rewards(data.rewards, info.domain),
        next_observations=scale(data.next_observations),
        terminals=data.terminals,
    )
    return Transitions(**{name: np.asarray(x, np.float32) for name, x in dataclasses.asdict(arrays).items()}), scale


# --- evaluation ----------------------------------------------------------------------------------


class ObsScaler(NamedTuple):
    """Observation standardisation fitted on the dataset; evaluation and saved policies apply it too."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, observations: np.ndarray, standardise: bool) -> "ObsScaler":
        if not standardise:
            dim = observations.shape[1]
            return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))
        return cls(observations.mean(axis=0), observations.std(axis=0) + 1e-3)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return ((observations - self.mean) / self.std).astype(np.float32)

    def header(self) -> dict:
        """What a checkpoint records of it, for `from_header`."""
        return {"obs_mean": self.mean.tolist(), "obs_std": self.std.tolist()}

    @classmethod
    def from_header(cls, header: dict) -> "ObsScaler":
        return cls(np.asarray(header["obs_mean"], np.float32), np.asarray(header["obs_std"], np.float32))


class ActionBox(NamedTuple):
    """The environment's action bounds: the learner works in [−1, 1] (tanh), the environment in its box."""

    low: np.ndarray
    high: np.ndarray

    def to_unit(self, actions: np.ndarray) -> np.ndarray:
        return 2.0 * (actions - self.low) / (self.high - self.low) - 1.0

    def from_unit(self, actions: np.ndarray) -> np.ndarray:
        return self.low + 0.5 * (actions + 1.0) * (self.high - self.low)

    def header(self) -> dict:
        """What a checkpoint records of it, for `from_header`."""
        return {"action_low": self.low.tolist(), "action_high": self.high.tolist()}

    @classmethod
    def from_header(cls, header: dict) -> "ActionBox":
        return cls(np.asarray(header["action_low"]), np.asarray(header["action_high"]))


def evaluation_seeds(seeds: list[int], step: int, episodes: int) -> list[int]:
    """The environment seeds of each seed's evaluation episodes at `step`: the same for every variant, and
    for a seed whichever seeds it is trained with."""
    return [int(s) for seed in seeds for s in np.random.default_rng([seed, step]).integers(2**31, size=episodes)]


def evaluate_policies(
    act: Callable, policies: Any, num_seeds: int, envs, scale_obs: Callable, box: ActionBox, env_seeds: list[int]
) -> np.ndarray:
    """Returns [seeds, episodes] of one deterministic episode in each of the vector env's copies, all seeds'
    episodes stepped together (copy i belongs to seed i // episodes; `env_seeds[i]` starts it). `act(policies,
    observations [seeds, n, obs_dim])` gives actions in [−1, 1]; `scale_obs` standardises the observations."""
    obs, _ = envs.reset(seed=env_seeds)
    returns = np.zeros(envs.num_envs)
    running = np.ones(envs.num_envs, bool)
    while running.any():
        unit_actions = np.asarray(act(policies, scale_obs(obs).reshape(num_seeds, -1, obs.shape[-1])))
        obs, rewards, terminated, truncated, _ = envs.step(box.from_unit(unit_actions.reshape(envs.num_envs, -1)))
        returns += np.where(running, rewards, 0.0)
        running &= ~(terminated | truncated)  # finished copies auto-reset; their later rewards are not counted
    return returns.reshape(num_seeds, -1)
