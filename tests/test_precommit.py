"""The documented pre-commit setup gates: `archscan init` + this repository's hook, driven through
`pre-commit try-repo` (pre-commit from PyPI, the test extra), fails the commit on a leaking model and
passes a model the gate accepts."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MODELS = '''import torch.nn as nn


def leaky():
    """A conv with an invertible activation before a Linear with bias: the chain inverts both."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def pooled():
    """Stride, ReLU and a pool before a small head: not LEAKS (what fail-on = "leaks" gates)."""
    return nn.Sequential(nn.Conv2d(3, 2, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(2, 3))
'''

needs = pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None
                           or shutil.which("pre-commit", path=os.path.dirname(sys.executable)) is None,
                           reason="needs a git checkout of archscan, git and pre-commit (the test extra)")


def _project(tmp_path: Path, model: str, shape: str) -> tuple[Path, dict]:
    proj = tmp_path / model
    proj.mkdir()
    (proj / "models.py").write_text(MODELS)
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "ARCHSCAN_NO_PROGRESS": "1", "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "archscan", "init", "--model", f"models.py:{model}",
                                        "--input-shape", shape], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=proj, env=env, check=True, capture_output=True, text=True)
    return proj, env


def _try_repo(proj: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["pre-commit", "try-repo", str(ROOT), "archscan", "--all-files"], cwd=proj, env=env,
                          capture_output=True, text=True, timeout=600)


@needs
def test_the_hook_fails_a_leaking_model_and_passes_a_gated_one(tmp_path):
    proj, env = _project(tmp_path, "leaky", "3,8,8")
    assert 'fail-on = "leaks"' in (proj / "pyproject.toml").read_text()     # init writes an active gate
    leaky = _try_repo(proj, env)
    out = leaky.stdout + leaky.stderr
    assert leaky.returncode == 1 and "Failed" in out and "LEAKS" in out, out
    assert "measured fix: " in out, out               # init's suggest = "on-fail": the fix, rescanned
    proj, env = _project(tmp_path, "pooled", "3,8,8")
    safe = _try_repo(proj, env)
    out = safe.stdout + safe.stderr
    assert safe.returncode == 0 and "Passed" in out, out
