"""`gencore train / sample / eval` end to end on tiny models, and clear errors for bad arguments."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import gencore.nn
from gencore.cli import main

FUSED_ARGS = [] if hasattr(gencore.nn, "BatchNormLeakyReLU2d") else ["--no-fused"]
TINY = {
    "dcgan": ["--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "16", "--eval-samples", "64"],
    "vae": ["--nz", "4", "--batch-size", "16", "--eval-samples", "64"],
    "gan2d": ["--batch-size", "20", "--eval-samples", "200"],
}
PROMISED = ["config.json", "metrics.jsonl", "real.png", "samples.png", "losses.png", "metrics.json", "checkpoint.pt"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(model, out, *extra):
    return main(["train", model, *TINY[model], *FUSED_ARGS, "--steps", "4", "--sample-every", "2",
                 "--no-progress", "--out", str(out), *extra])


@pytest.mark.parametrize("model", ["dcgan", "vae", "gan2d"])
def test_train_sample_eval(tmp_path, model, capsys):
    run = tmp_path / "run"
    assert _train(model, run) == 0
    for name in PROMISED + ["samples/step_000002.png", "samples/step_000004.png"]:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["step"] == 4
    expected = {"dcgan": "fd", "vae": "test_elbo", "gan2d": "modes"}[model]
    assert expected in summary
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == model and cfg["total_steps"] == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" in r] == [2, 4]
    capsys.readouterr()

    assert main(["sample", "--checkpoint", str(run), "--n", "16", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[expected] == pytest.approx(json.loads((run / "eval.json").read_text())[expected])


def test_resume_through_cli(tmp_path):
    # The part run is created with fewer steps: a linear lr schedule (gan2d's default) would differ by design.
    const = ["--lr-schedule", "constant"]
    assert _train("gan2d", tmp_path / "full", "--steps", "6", "--log-every", "1", *const) == 0
    assert _train("gan2d", tmp_path / "part", "--steps", "3", "--log-every", "1", *const) == 0
    assert main(["train", "gan2d", "--resume", "--out", str(tmp_path / "part"), "--steps", "6", "--no-progress"]) == 0

    def losses(path):
        return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()
                if "eval" not in json.loads(line)]

    assert losses(tmp_path / "full") == losses(tmp_path / "part")


@pytest.mark.parametrize("argv,message", [
    (["train", "dcgan", "--data", "mnist"], "unknown data set 'mnist'"),
    (["train", "dcgan", "--image-size", "48"], "image_size must be one of"),
    (["train", "gan2d", "--data", "digits"], "gan2d trains on 2-D points"),
    (["train", "vae", "--loss", "hinge"], "apply to the GAN models"),
    (["train", "dcgan", "--resume"], "--resume needs --out"),
])
def test_bad_arguments(tmp_path, capsys, argv, message):
    assert main(argv + FUSED_ARGS + ["--out", str(tmp_path / "x")] * ("--resume" not in argv)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_folder_and_run_reuse(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "dcgan", "--data", f"folder:{tmp_path / 'empty'}", *FUSED_ARGS, "--out", str(tmp_path / "r")]) == 2
    assert "no PNG or JPEG images" in capsys.readouterr().err
    assert _train("gan2d", tmp_path / "run") == 0
    assert _train("gan2d", tmp_path / "run") == 2
    assert "already holds a run; add --resume" in capsys.readouterr().err
    assert main(["train", "gan2d", "--resume", "--out", str(tmp_path / "run"), "--lr", "0.1"]) == 2
    assert "--resume cannot change --lr" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["eval", "--checkpoint", str(tmp_path / "junk.pt")]) == 2
    assert "not a loadable gencore checkpoint" in capsys.readouterr().err


def test_argparse_errors_exit_nonzero():
    with pytest.raises(SystemExit) as exc:
        main(["train", "dcgan", "--steps", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["train", "wgan"])
    with pytest.raises(SystemExit):
        main(["train", "dcgan", "--steps", "3", "--epochs", "1"])


def test_real_process_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gencore", "train", "dcgan", "--data", "nope", "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, cwd=os.getcwd(),
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "unknown data set 'nope'" in proc.stderr
