"""common.datasets: D4RL-format files (transitions, validation, download into the cache), Minari datasets,
evaluation envs and normalised scores. No network: files are written here, downloads come from a local
server, Minari datasets are created in a temporary directory."""

import http.server
import tempfile
import threading
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from common.datasets import (
    D4RL_DATASETS,
    DatasetError,
    DatasetInfo,
    action_bounds,
    load_dataset,
    make_eval_envs,
    normalized_score,
)

# ten rows, three episodes: rows 0-2 end in a terminal, rows 3-5 in a timeout, rows 6-9 are a partial episode
TERMINALS = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
TIMEOUTS = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=bool)


def small_arrays() -> dict[str, np.ndarray]:
    rows = np.arange(10, dtype=np.float32)
    return {
        "observations": np.stack([rows, 10 * rows], axis=1),  # row i observes [i, 10i]
        "actions": (rows / 10)[:, None],
        "rewards": rows + 0.5,
        "terminals": TERMINALS,
        "timeouts": TIMEOUTS,
    }


def write_d4rl_file(path: Path, arrays: dict[str, np.ndarray] | None = None, **attrs) -> Path:
    with h5py.File(path, "w") as file:
        for key, array in (small_arrays() if arrays is None else arrays).items():
            file.create_dataset(key, data=array)
        file.attrs.update(attrs)
    return path


def test_transitions_follow_d4rl_qlearning_dataset(tmp_path):
    transitions, info = load_dataset("mine", dataset_path=str(write_d4rl_file(tmp_path / "mine.hdf5")))
    # rows 0..8 are candidates; row 5 (timeout) is dropped; row 9 has no next row
    np.testing.assert_array_equal(transitions.observations[:, 0], [0, 1, 2, 3, 4, 6, 7, 8])
    np.testing.assert_array_equal(transitions.next_observations[:, 0], [1, 2, 3, 4, 5, 7, 8, 9])
    np.testing.assert_array_equal(transitions.next_observations[:, 1], [10, 20, 30, 40, 50, 70, 80, 90])
    np.testing.assert_array_equal(transitions.actions[:, 0], np.float32([0, 1, 2, 3, 4, 6, 7, 8]) / 10)
    np.testing.assert_array_equal(transitions.rewards, [0.5, 1.5, 2.5, 3.5, 4.5, 6.5, 7.5, 8.5])
    np.testing.assert_array_equal(transitions.terminals, [0, 0, 1, 0, 0, 0, 0, 0])
    for array in (transitions.observations, transitions.actions, transitions.rewards, transitions.terminals):
        assert array.dtype == np.float32
    assert info == DatasetInfo("mine", "locomotion", None, None, None, None)
    assert normalized_score(info, np.array([1.0])) is None


def test_transitions_match_a_step_by_step_reading_on_random_episodes(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    arrays = {
        "observations": rng.normal(size=(n, 4)),
        "actions": rng.uniform(-1, 1, size=(n, 2)),
        "rewards": rng.normal(size=(n, 1)),  # [N, 1] is accepted, as in d4rl
        "terminals": rng.random(n) < 0.05,
        "timeouts": rng.random(n) < 0.05,
    }
    transitions, _ = load_dataset("random", dataset_path=str(write_d4rl_file(tmp_path / "r.hdf5", arrays)))
    # d4rl's rule, one row at a time: every row but the last, skipping the rows that end in a timeout
    kept = [i for i in range(n - 1) if not arrays["timeouts"][i]]
    np.testing.assert_allclose(transitions.observations, arrays["observations"][kept], rtol=1e-6)
    np.testing.assert_allclose(transitions.next_observations, arrays["observations"][[i + 1 for i in kept]], rtol=1e-6)
    np.testing.assert_allclose(transitions.rewards, arrays["rewards"][kept, 0], rtol=1e-6)
    np.testing.assert_array_equal(transitions.terminals, arrays["terminals"][kept])


def test_custom_file_attributes_give_the_info(tmp_path):
    path = write_d4rl_file(tmp_path / "c.hdf5", env_id="Pendulum-v1", ref_min_score=-1200.0, ref_max_score=-150.0)
    _, info = load_dataset(str(path))  # the path itself as the id
    assert info == DatasetInfo(str(path), "locomotion", -1200.0, -150.0, "Pendulum-v1", None)
    np.testing.assert_allclose(normalized_score(info, np.array([-1200.0, -150.0, -675.0])), [0.0, 100.0, 50.0])
    envs = make_eval_envs(info, 3)
    assert envs.num_envs == 3 and envs.single_observation_space.shape == (3,)
    np.testing.assert_array_equal(np.stack(action_bounds(info, 1)), [[-2.0], [2.0]])  # Pendulum's box
    envs.close()

    _, info = load_dataset("maze", dataset_path=str(write_d4rl_file(tmp_path / "m.hdf5", domain="antmaze")))
    assert info.domain == "antmaze"
    with pytest.raises(DatasetError, match="no environment to evaluate"):
        make_eval_envs(info, 1)
    with pytest.raises(DatasetError, match="domain='cartpole'"):
        load_dataset("x", dataset_path=str(write_d4rl_file(tmp_path / "bad.hdf5", domain="cartpole")))


@pytest.mark.filterwarnings("ignore:.*Ant-v4 is out of date")  # v4 has D4RL's observations; v5 does not
def test_d4rl_name_with_a_local_file_and_its_eval_env(tmp_path):
    path = write_d4rl_file(tmp_path / "hopper.hdf5")
    _, info = load_dataset("hopper-medium-v2", dataset_path=str(path))
    assert info == DatasetInfo("hopper-medium-v2", "locomotion", -20.272305, 3234.3, "Hopper-v4", None)
    np.testing.assert_array_equal(np.stack(action_bounds(info, 3)), [[-1.0] * 3, [1.0] * 3])
    np.testing.assert_allclose(normalized_score(info, np.array([3234.3])), [100.0])
    # D4RL's ant observations include contact forces (111 numbers); gymnasium's Ant-v4 needs a flag for them
    ant = DatasetInfo("ant-medium-v2", "locomotion", -325.6, 3879.7, "Ant-v4", None)
    envs = make_eval_envs(ant, 1)
    assert envs.single_observation_space.shape == (111,)
    envs.close()
    # antmaze, adroit, kitchen: their envs need the d4rl package; train without evaluation, or Minari's copy
    _, info = load_dataset("antmaze-umaze-v2", dataset_path=str(path))
    assert (info.domain, info.ref_min_score, info.ref_max_score, info.eval_env_id) == ("antmaze", 0.0, 1.0, None)
    with pytest.raises(DatasetError, match="--eval-episodes 0.*--env-id D4RL/antmaze/umaze-v1"):
        make_eval_envs(info, 1)
    assert D4RL_DATASETS["pen-human-v1"].domain == "adroit" and D4RL_DATASETS["kitchen-mixed-v0"].ref_max_score == 4.0


# --- bad inputs -----------------------------------------------------------------------------------


def test_an_evaluation_env_that_cannot_be_built_names_the_dataset():
    info = DatasetInfo("mine-v0", "locomotion", 0.0, 1.0, "NoSuchEnv-v0", None)
    with pytest.raises(DatasetError, match="evaluation environment of mine-v0 could not be built .*NoSuchEnv"):
        make_eval_envs(info, 2)


def test_unknown_id_names_valid_choices():
    with pytest.raises(DatasetError, match="hopper-medium-v2") as error:
        load_dataset("hopper-medium-v3")
    assert "mujoco/hopper/medium-v0" in str(error.value) and "did you mean" in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no dataset file at .*nope.hdf5.*make_dataset"):
        load_dataset("mine", dataset_path=str(tmp_path / "nope.hdf5"))


def test_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "text.hdf5"
    path.write_text("not a dataset")
    with pytest.raises(DatasetError, match="text.hdf5 is not an HDF5 file"):
        load_dataset("mine", dataset_path=str(path))


def test_missing_keys_are_named(tmp_path):
    arrays = small_arrays()
    del arrays["actions"], arrays["timeouts"]
    with pytest.raises(DatasetError, match="lacks the D4RL key\\(s\\) actions, timeouts"):
        load_dataset("mine", dataset_path=str(write_d4rl_file(tmp_path / "k.hdf5", arrays)))


def test_inconsistent_lengths_name_each_key(tmp_path):
    arrays = small_arrays()
    arrays["rewards"] = arrays["rewards"][:7]
    with pytest.raises(DatasetError, match="different lengths.*'rewards': 7.*'terminals': 10"):
        load_dataset("mine", dataset_path=str(write_d4rl_file(tmp_path / "l.hdf5", arrays)))


@pytest.mark.parametrize("key", ["observations", "actions", "rewards"])
def test_non_finite_values_name_key_and_rows(tmp_path, key):
    arrays = small_arrays()
    arrays[key] = arrays[key].copy()
    arrays[key][3] = np.nan
    arrays[key][7] = np.inf
    with pytest.raises(DatasetError, match=f"{key} has NaN/inf in 2 row\\(s\\) \\(first: \\[3, 7\\]\\)"):
        load_dataset("mine", dataset_path=str(write_d4rl_file(tmp_path / "n.hdf5", arrays)))


# --- download into D4RL's cache -------------------------------------------------------------------


class FileServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1; paths in `truncated` announce 1000 more bytes than
    they send, then close the connection."""

    def __init__(self, files: dict[str, bytes], truncated: set[str]):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (1000 if self.path in truncated else 0)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def d4rl_cache(tmp_path, monkeypatch):
    cache = tmp_path / "d4rl_cache"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # the local server must not be reached through a proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return cache


def test_download_lands_in_the_cache_and_is_reused(tmp_path, monkeypatch, d4rl_cache):
    body = write_d4rl_file(tmp_path / "served.hdf5").read_bytes()
    url_path = "/" + D4RL_DATASETS["hopper-medium-v2"].url_path
    with FileServer({url_path: body}, truncated=set()) as server:
        monkeypatch.setenv("D4RL_DATASET_URL_ROOT", server.url)
        transitions, info = load_dataset("hopper-medium-v2")
        assert (d4rl_cache / "hopper_medium-v2.hdf5").read_bytes() == body  # D4RL's file name: the URL's basename
        assert len(transitions.rewards) == 8 and info.eval_env_id == "Hopper-v4"
        load_dataset("hopper-medium-v2")
        assert server.requests == [url_path]  # the second load used the cache
    assert sorted(p.name for p in d4rl_cache.iterdir()) == ["hopper_medium-v2.hdf5"]


@pytest.mark.parametrize(
    "served, message",
    [("truncated", "closed after .* bytes"), ("missing", "404"), ("not_hdf5", "not an HDF5 file")],
)
def test_failed_download_raises_and_leaves_no_file(tmp_path, monkeypatch, d4rl_cache, served, message):
    body = write_d4rl_file(tmp_path / "served.hdf5").read_bytes()
    url_path = "/" + D4RL_DATASETS["walker2d-medium-v2"].url_path
    files = {"truncated": {url_path: body}, "missing": {}, "not_hdf5": {url_path: b"<html>moved</html>"}}[served]
    with FileServer(files, truncated={url_path} if served == "truncated" else set()) as server:
        monkeypatch.setenv("D4RL_DATASET_URL_ROOT", server.url)
        with pytest.raises(DatasetError, match=f"could not download D4RL dataset walker2d-medium-v2 .*{message}"):
            load_dataset("walker2d-medium-v2")
    assert list(d4rl_cache.iterdir()) == []  # neither the final file nor the .part


# --- Minari ---------------------------------------------------------------------------------------


def make_minari_dataset(dataset_id: str, episodes: list[dict], **kwargs):
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(**episode) for episode in episodes]
    with pytest.warns(UserWarning):  # minari asks for an author, a permalink, ...
        return minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers, **kwargs)


def pendulum_episodes(lengths: list[int], seed: int) -> list[dict]:
    """Episodes played in Pendulum-v1; the second one is marked terminated (data is data)."""
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    episodes = []
    for k, length in enumerate(lengths):
        obs, _ = env.reset(seed=seed + k)
        observations, actions, rewards = [obs], [], []
        for _ in range(length):
            action = rng.uniform(-2, 2, size=(1,)).astype(np.float32)
            obs, reward, *_ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
        end = [False] * (length - 1)
        episodes.append(
            {
                "observations": np.stack(observations),
                "actions": np.stack(actions),
                "rewards": rewards,
                "terminations": end + [k == 1],
                "truncations": end + [k != 1],
            }
        )
    return episodes


@pytest.mark.parametrize(
    ("env_id", "dataset_id", "domain"),
    [("AdroitHandPen-v1", "D4RL/pen/test-v0", "adroit"), ("AntMaze_UMaze-v5", "D4RL/antmaze/test-v0", "antmaze")],
)
def test_minari_robotics_datasets_recover_their_evaluation_env(env_id, dataset_id, domain, tmp_path, monkeypatch):
    """Minari's adroit and antmaze copies evaluate on gymnasium-robotics environments (antmaze's observations
    are a dict): the recovered env must build and give observations shaped like the flattened dataset's."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    # gymnasium-robotics writes each maze's XML beside its TemporaryDirectory and never removes it: keep it in tmp_path
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env = gym.make(f"gymnasium_robotics:{env_id}")  # imports the package, which registers its ids
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    observations, actions, rewards = [obs], [], []
    for _ in range(3):
        actions.append(env.action_space.sample())
        obs, reward, *_ = env.step(actions[-1])
        observations.append(obs)
        rewards.append(reward)
    if isinstance(obs, dict):
        observations = {key: np.stack([o[key] for o in observations]) for key in obs}
    else:
        observations = np.stack(observations)
    episode = {
        "observations": observations,
        "actions": np.stack(actions),
        "rewards": rewards,
        "terminations": [False] * 3,
        "truncations": [False, False, True],
    }
    make_minari_dataset(dataset_id, [episode], env=env.spec)
    transitions, info = load_dataset(dataset_id)
    assert info.domain == domain and transitions.observations.shape[0] == 3
    envs = make_eval_envs(info, 2)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, transitions.observations.shape[1])
    envs.step(np.zeros((2, transitions.actions.shape[1]), np.float32))
    envs.close()


def test_minari_dataset_transitions_and_info(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    episodes = pendulum_episodes([5, 3, 4], seed=0)
    make_minari_dataset(
        "pendulum/test-v0",
        episodes,
        env="Pendulum-v1",
        eval_env="Pendulum-v1",
        ref_min_score=-1000.0,
        ref_max_score=-100.0,
    )
    transitions, info = load_dataset("pendulum/test-v0")
    # every step of every episode is a transition: Minari keeps each episode's final observation
    np.testing.assert_array_equal(transitions.observations, np.concatenate([e["observations"][:-1] for e in episodes]))
    np.testing.assert_array_equal(
        transitions.next_observations, np.concatenate([e["observations"][1:] for e in episodes])
    )
    np.testing.assert_array_equal(transitions.actions, np.concatenate([e["actions"] for e in episodes]))
    np.testing.assert_allclose(transitions.rewards, np.concatenate([e["rewards"] for e in episodes]), rtol=1e-6)
    np.testing.assert_array_equal(transitions.terminals, [0] * 5 + [0, 0, 1] + [0] * 4)
    assert info == DatasetInfo("pendulum/test-v0", "locomotion", -1000.0, -100.0, "Pendulum-v1", "pendulum/test-v0")
    np.testing.assert_array_equal(np.stack(action_bounds(info, 1)), [[-2.0], [2.0]])  # the recorded space
    envs = make_eval_envs(info, 2)
    assert envs.single_observation_space.shape == (3,)
    envs.close()


def test_minari_dict_observations_are_flattened_like_gymnasium(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    space = gym.spaces.Dict(
        {
            "position": gym.spaces.Box(-1, 1, (2, 2)),
            "goal": gym.spaces.Box(-5, 5, (3,)),
            "phase": gym.spaces.Discrete(3),
        }
    )
    space.seed(0)
    samples = [space.sample() for _ in range(5)]  # one episode of 4 steps
    observations = {key: np.stack([s[key] for s in samples]) for key in space.spaces}
    episode = {
        "observations": observations,
        "actions": np.zeros((4, 1), np.float32),
        "rewards": [0.0] * 4,
        "terminations": [False] * 4,
        "truncations": [False] * 3 + [True],
    }
    action_space = gym.spaces.Box(-1, 1, (1,))
    make_minari_dataset("D4RL/antmaze/test-v0", [episode], observation_space=space, action_space=action_space)
    transitions, info = load_dataset("D4RL/antmaze/test-v0")
    expected = np.stack([gym.spaces.flatten(space, s) for s in samples]).astype(np.float32)
    np.testing.assert_array_equal(transitions.observations, expected[:-1])
    np.testing.assert_array_equal(transitions.next_observations, expected[1:])
    assert info.domain == "antmaze" and info.ref_min_score is None and info.eval_env_id is None
