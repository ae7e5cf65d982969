"""archscan sweep: tasks from a sweep file, the resumable store, serial and Ray runs giving
byte-identical results, a killed task retried, and the report as a function of the store."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archscan.errors import InputError
from archscan.validate import sweep as sw
from archscan.validate.store import ResultStore, task_key

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """seed = 0
images = 2
attacks = ["prior", "ig"]
set = {{ ig = {{ iterations = 5 }} }}
defences = [[], ["dp:sigma=0.1,clip=1"]]

[[model]]
spec = "{root}/examples/paper_zoo.py:cnn_narrow"
input_shape = [3, 32, 32]
num_classes = 10
"""


# the CI sweep: 3 models x 2 images x 3 configurations (and each model's prediction)
RAY_SWEEP = """seed = 0
images = 2
attacks = ["ig"]
set = {{ ig = {{ iterations = 5 }} }}
configurations = {{ ig = [{{ tv = 1e-2 }}, {{ tv = 1e-4 }}, {{ tv = 0.0, signed = false }}] }}
{models}
"""
RAY_MODELS = ("cnn_narrow", "lenet5", "mlp2")


@pytest.fixture
def ray_sweep_file(tmp_path):
    models = "".join(f'[[model]]\nspec = "{ROOT}/examples/paper_zoo.py:{m}"\ninput_shape = [3, 32, 32]\n'
                     f"num_classes = 10\n" for m in RAY_MODELS)
    p = tmp_path / "ray_sweep.toml"
    p.write_text(RAY_SWEEP.format(models=models))
    return p


@pytest.fixture
def sweep_file(tmp_path):
    p = tmp_path / "sweep.toml"
    p.write_text(SWEEP.format(root=ROOT))
    return p


def _files(store: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((store / "results").glob("*.json"))}


def test_a_sweep_over_a_manifest(tmp_path):
    p = tmp_path / "zoo.toml"
    p.write_text(f"manifest = '{ROOT}/examples/manifest.toml'\nselect = ['lenet5', 'cnn6_d']\nattacks = ['prior']\n")
    spec = sw.read_sweep(str(p))
    assert [m["name"] for m in spec["models"]] == ["lenet5", "cnn6_d"]
    assert all(Path(m["spec"].split(":")[0]).is_absolute() for m in spec["models"])
    assert spec["models"][0]["input_shape"] == [3, 32, 32] and spec["models"][0]["num_classes"] == 10


def test_tasks_of_a_sweep(sweep_file):
    spec = sw.read_sweep(str(sweep_file))
    tasks = sw.tasks(spec)
    # 2 defence settings x (1 prediction + 2 attacks x 1 configuration x 2 images)
    assert len(tasks) == 2 * (1 + 2 * 2) and len({task_key(t) for t in tasks}) == len(tasks)
    assert [t["kind"] for t in tasks].count("predict") == 2
    assert sw.tasks(spec) == tasks                                      # a fixed order


@pytest.mark.parametrize("text, words", [
    ("seed = 0\n", "no [[model]] table and no manifest"),
    ("select = ['lenet5']\n", "select needs a manifest"),
    (f"manifest = '{ROOT}/examples/manifest.toml'\nselect = ['lenet7']\n", "'lenet7' is not a fast model"),
    ("sed = 0\n[[model]]\nspec='a.py:f'\ninput_shape=[3,8,8]\n", "unknown key 'sed'"),
    ("[[model]]\nspec='a.py:f'\n", "needs spec and input_shape"),
    ("attacks = ['igg']\n[[model]]\nspec='a.py:f'\ninput_shape=[3,8,8]\n", "unknown attack 'igg'"),
    ("defences = [['dp:clip=1']]\n[[model]]\nspec='a.py:f'\ninput_shape=[3,8,8]\n", "dp needs sigma"),
    ("seed = [\n", "not valid TOML"),
    ("[[model]]\nspec='nope.py:f'\ninput_shape=[3,8,8]\n", "no such file"),
    ("configurations = { ig = [{ tvv = 1 }] }\n[[model]]\nspec='a.py:f'\ninput_shape=[3,8,8]\n",
     "tvv is not a setting of ig"),
    ("configurations = { dlg = [{ tv = 1 }] }\n[[model]]\nspec='a.py:f'\ninput_shape=[3,8,8]\n",
     "for an attack in `attacks`"),
])
def test_bad_sweep_files_are_one_clear_error(tmp_path, text, words):
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        sw.read_sweep(str(p))
    assert words in str(e.value)


def test_serial_run_resumes_and_the_report_is_a_function_of_the_store(sweep_file, tmp_path):
    spec = sw.read_sweep(str(sweep_file))
    tasks = sw.tasks(spec)
    store = ResultStore(tmp_path / "store")
    first = sw.execute(tasks, store, backend="serial")
    assert first == {"tasks": 10, "cached": 0, "ran": 10, "backend": "serial"}
    rep = sw.report(spec, store)
    assert rep["missing"] == 0 and len(rep["rows"]) == 2
    plain, noisy = rep["rows"]
    assert plain["defences"] == [] and noisy["defences"] == ["dp:sigma=0.1,clip=1"]
    assert plain["predicted_psnr"] > noisy["predicted_psnr"]              # noise costs the predicted attacker
    assert set(plain["best"]) == {"astronaut", "coffee"}
    again = sw.execute(tasks, store, backend="serial")
    assert again["ran"] == 0 and again["cached"] == 10                     # nothing recomputed
    victims = sorted((tmp_path / "store" / "results").glob("*.json"))[:3]
    before = {p.name: p.read_bytes() for p in victims}
    for p in victims:
        p.unlink()
    assert sw.report(spec, store)["missing"] == 3                          # counted, never guessed
    resumed = sw.execute(tasks, store, backend="serial")
    assert resumed["ran"] == 3 and {p.name: p.read_bytes() for p in victims} == before
    assert sw.report(spec, store) == rep


def test_cli_serial_writes_the_store_and_report(sweep_file, tmp_path, capsys):
    from archscan.cli.main import main
    out = tmp_path / "cli"
    assert main(["sweep", str(sweep_file), "-o", str(out), "--serial"]) == 0
    text = capsys.readouterr().out
    assert "cnn_narrow" in text and "dp:sigma=0.1,clip=1" in text
    assert (out / "report.json").is_file() and len(list((out / "results").glob("*.json"))) == 10
    html = (out / "report.html").read_text()
    assert "Across defence settings" in html and html.count("data:image/png;base64,") == 2
    assert "dp:sigma=0.1,clip=1" in html and "http" not in html.split("<style>")[0] + html.split("</style>")[1]
    assert main(["sweep", str(tmp_path / "nothing.toml"), "-o", str(out), "--serial"]) == 2


# --------------------------------------------------------------------------------------------
# Ray: a local head on loopback, as a cluster would be used.  The drivers run as subprocesses:
# Ray reads its authentication settings when it is imported, and this process stays Ray-free.

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 with token authentication (Ray's default from 2.59): the
    head and the drivers share the token through the environment.  Yields (address, env)."""
    pytest.importorskip("ray")
    exe = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    temp = tmp_path_factory.mktemp("ray")
    cmd = [exe, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
           "--object-store-memory=100000000"]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        pytest.fail(f"ray start failed: {started.stderr[-2000:]}")
    yield f"127.0.0.1:{port}", env
    subprocess.run([exe, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _sweep_cli(sweep_file, out, address, env, timeout=900):
    return subprocess.Popen([sys.executable, "-m", "archscan", "sweep", str(sweep_file), "-o", str(out),
                             "--ray-address", address], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_ray_sweep_resumes_after_an_interruption_and_equals_the_serial_run(ray_sweep_file, tmp_path, ray_head, capsys):
    """3 models x 2 images x 3 configurations on a loopback Ray head: the driver is killed once
    some tasks are in the store; the rerun computes only the rest; store and report equal the
    serial run's byte for byte."""
    from archscan.cli.main import main
    address, env = ray_head
    assert main(["sweep", str(ray_sweep_file), "-o", str(tmp_path / "serial"), "--serial"]) == 0
    capsys.readouterr()
    total = len(RAY_MODELS) * (1 + 3 * 2)
    assert len(_files(tmp_path / "serial")) == total
    out = tmp_path / "ray"
    first = _sweep_cli(ray_sweep_file, out, address, env)
    deadline = time.monotonic() + 600
    while len(list((out / "results").glob("*.json"))) < 4 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.kill()                                      # the driver dies mid-sweep
    first.communicate(timeout=60)
    done_before = len(list((out / "results").glob("*.json")))
    assert 4 <= done_before < total, done_before
    second = _sweep_cli(ray_sweep_file, out, address, env)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 0, err[-3000:]
    assert f"{total - done_before} task(s) ran on ray, {done_before} were already in" in err
    assert _files(tmp_path / "serial") == _files(out)                      # byte-identical records
    assert (tmp_path / "serial" / "report.json").read_bytes() == (out / "report.json").read_bytes()


CRASH_ONCE = """
import os, sys
from archscan.validate import sweep as sw
from archscan.validate.store import ResultStore, task_key
marker, store_dir, address = sys.argv[1:4]

def crash_once(task):                 # defined in __main__: Ray ships it by value
    if not os.path.exists(marker):
        open(marker, "w").write("x")
        os._exit(1)                   # the worker process dies mid-task, as when killed
    return {"value": task["n"] * 2}

store = ResultStore(store_dir)
counts = sw.execute([{"n": 1}, {"n": 2}], store, backend="ray", address=address, fn=crash_once)
print(counts["ran"], sorted(store.get(task_key({"n": i}))["value"] for i in (1, 2)))
"""


def test_a_task_whose_worker_dies_is_retried(tmp_path, ray_head):
    address, env = ray_head
    script = tmp_path / "crash_once.py"
    script.write_text(CRASH_ONCE)
    marker = tmp_path / "crashed-once"
    r = subprocess.run([sys.executable, str(script), str(marker), str(tmp_path / "store"), address], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.exists() and r.stdout.strip().splitlines()[-1] == "2 [2, 4]"


def test_an_archscan_error_inside_a_ray_task_comes_back_as_itself():
    """What ray.get raises for a task that raised InputError: the InputError, not Ray's wrapper."""
    class RayTaskError(Exception):
        def __init__(self, cause):
            self.cause = cause

    class FakeRay:
        exceptions = type("exceptions", (), {"RayTaskError": RayTaskError})

        def __init__(self, cause):
            self.error = RayTaskError(cause)

        def get(self, ref):
            raise self.error

    with pytest.raises(InputError, match="no such file"):
        sw._get(FakeRay(InputError("m.py: no such file")), None)
    with pytest.raises(RayTaskError):                       # anything else stays Ray's error
        sw._get(FakeRay(ValueError("bug")), None)
