"""Weights that travel (#38): safetensors files both ways, Hugging Face Hub repo folders, `hf-hub:` names read
through huggingface_hub's own cache, and timm loading what we wrote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (smoke preset, 1-channel 28 px synthetic images, 5 classes) and its safetensors export."""
    from typer.testing import CliRunner

    from resnet_cli.cli import app

    root = tmp_path_factory.mktemp("travel")
    runner = CliRunner()
    args = ["train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--set", "data.synthetic_train=64",
            "--set", "data.synthetic_test=32", "--set", "data.channels=1", "--set", "data.classes=5",
            "--set", "data.image_size=28", "--batch-size", "16", "--run-dir", str(root / "runs"), "--name", "r"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["export", str(root / "runs" / "r"), "-o", str(root / "r.safetensors")])
    assert done.exit_code == 0, done.output
    return root


def _batch(seed=0):
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_safetensors_round_trip_gives_the_checkpoints_outputs_and_metadata(trained):
    from safetensors import safe_open

    from resnet_cli.checkpoint import model_from_checkpoint

    run, file = model_from_checkpoint(trained / "runs" / "r"), model_from_checkpoint(trained / "r.safetensors")
    with torch.inference_mode():
        assert torch.equal(run.model(_batch()), file.model(_batch()))
    assert file.config.model.name == "resnet20" and file.config.data.dataset == "synthetic"
    with safe_open(str(trained / "r.safetensors"), "pt") as f:  # the metadata, as any safetensors reader sees it
        meta = f.metadata()
        assert set(f.keys()) == set(run.model.state_dict())
    assert json.loads(meta["resnet_cli.input"]) == run.checkpoint["input"]
    assert json.loads(meta["resnet_cli.config"])["model"]["name"] == "resnet20"
    assert meta["resnet_cli.weights"] == "raw" and file.saved_input == run.checkpoint["input"]


def test_a_pickle_renamed_safetensors_is_refused_without_unpickling(cli, tmp_path, trained):
    fake = tmp_path / "model.safetensors"
    shutil.copy(trained / "runs" / "r" / "best.pt", fake)  # a PyTorch zip; a crafted pickle is refused the same way
    out = cli("eval", str(fake))
    assert out.exit_code == 2
    assert "is not a safetensors file (no JSON header at its start: a PyTorch pickle or zip renamed " \
           ".safetensors?)" in out.stderr
    (tmp_path / "short.safetensors").write_bytes(b"\x05")
    out = cli("summary", str(tmp_path / "short.safetensors"))
    assert out.exit_code == 2 and "not a safetensors file (truncated: 1 bytes)" in out.stderr


def test_a_bare_safetensors_of_another_architecture_names_the_tensors(cli, tmp_path, trained):
    """A file with no metadata (timm's, another tool's) is a bare state_dict: --model names it, and a file of another
    architecture is one line naming what does not fit."""
    from safetensors.torch import save_file

    from resnet_cli.checkpoint import model_from_checkpoint

    state = model_from_checkpoint(trained / "r.safetensors").model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bare.safetensors"))
    out = cli("summary", str(tmp_path / "bare.safetensors"))
    assert out.exit_code == 2 and "is a bare state_dict; say which model it is with --model" in out.stderr
    out = cli("export", str(tmp_path / "bare.safetensors"), "--model", "resnet20", "--dataset", "synthetic",
              "-o", str(tmp_path / "named.safetensors"))  # 5 outputs, and synthetic data has 10 classes
    assert out.exit_code == 2 and "a 5-output resnet20 cannot be a model of synthetic, which has 10" in out.stderr
    from resnet_cli.models import build_model

    fresh = build_model("resnet20", num_classes=10).state_dict()
    save_file({k: v.contiguous() for k, v in fresh.items()}, str(tmp_path / "ten.safetensors"))
    out = cli("export", str(tmp_path / "ten.safetensors"), "--model", "resnet20", "--dataset", "synthetic",
              "-o", str(tmp_path / "named.safetensors"))
    assert out.exit_code == 0, out.output
    out = cli("export", str(tmp_path / "bare.safetensors"), "--model", "resnet32", "--dataset", "synthetic",
              "-o", str(tmp_path / "other.safetensors"))
    assert out.exit_code == 2
    assert "does not fit resnet32: Missing key(s) in state_dict: \"layer1.3.conv1.weight\"" in out.stderr


@pytest.mark.slow
def test_init_from_safetensors_and_its_mismatch(cli, tmp_path, trained, smoke_args):
    out = cli("train", *smoke_args(), "--epochs", "1", "--init", str(trained / "r.safetensors"),
              "--run-dir", str(tmp_path / "runs"), "--name", "ft")
    assert out.exit_code == 0, out.output
    assert f"model.init: loaded 113 of 116 tensors from {trained / 'r.safetensors'}" in out.stdout
    out = cli("train", *smoke_args(), "--model", "resnet32", "--init", str(trained / "r.safetensors"),
              "--run-dir", str(tmp_path / "runs"), "--print-config")
    assert out.exit_code == 0  # --print-config loads nothing
    out = cli("train", *smoke_args(), "--model", "resnet32", "--init", str(trained / "r.safetensors"),
              "--run-dir", str(tmp_path / "runs"))
    assert out.exit_code == 2 and "(a resnet20) does not fit resnet32: 60 of its tensors missing (layer1.3.conv1.weight, " \
        in out.stderr


def _hub_cache(home: Path, repo: str, folder: Path) -> str:
    """`folder` placed into a Hugging Face cache under `home` as huggingface_hub lays out a download: blobs named
    by their hash, a snapshot of symlinks to them, refs/main naming the snapshot."""
    base = home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (base / "blobs").mkdir()
    for f in folder.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, base / "blobs" / digest)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    return commit


def _resnet(*args, env, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_hub_folder_loads_through_huggingface_hubs_cache_offline(tmp_path, trained, smoke_args):
    pytest.importorskip("huggingface_hub")
    from PIL import Image

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}
    done = _resnet("export", trained / "runs" / "r", "--format", "hub", "-o", tmp_path / "repo", env=env)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "timm: no equivalent" in done.stdout
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                                     "train_config.yaml"]
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "# resnet20 on synthetic" in card and "resnet train --config train_config.yaml" in card
    assert "| test_top1 |" in card and "library_name: resnet-cli" in card
    _hub_cache(tmp_path / "hf", "someone/tiny-resnet", tmp_path / "repo")

    done = _resnet("train", *smoke_args(), "--epochs", "1", "--init", "hf-hub:someone/tiny-resnet",
                   "--run-dir", tmp_path / "runs", "--name", "from-hub", env=env)
    assert done.returncode == 0, done.stderr
    assert "model.init: loaded 113 of 116 tensors from" in done.stdout and "snapshots" in done.stdout
    Image.new("L", (28, 28), 128).save(tmp_path / "gray.png")
    done = _resnet("predict", "hf-hub:someone/tiny-resnet", tmp_path / "gray.png", "--json", env=env)
    assert done.returncode == 0, done.stderr
    direct = _resnet("predict", tmp_path / "repo", tmp_path / "gray.png", "--json", env=env)
    assert json.loads(done.stdout)["predictions"] == json.loads(direct.stdout)["predictions"]  # the same weights, the same input
    done = _resnet("summary", "hf-hub:someone/tiny-resnet", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["model"], summary["num_classes"], summary["input_size"]) == ("resnet20", 5, 28)
    done = _resnet("eval", "hf-hub:someone/tiny-resnet", "--json", env=env)
    assert done.returncode == 0, done.stderr  # the run's config travels: its (synthetic) test set is rebuilt
    direct = _resnet("eval", trained / "runs" / "r", "--json", env=env)
    assert json.loads(done.stdout)["top1"] == json.loads(direct.stdout)["top1"]

    done = _resnet("eval", "hf-hub:someone/not-fetched", env=env)  # offline, not in the cache: how to get it
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: hf-hub:someone/not-fetched is not in the Hugging Face cache "
                                   f"({tmp_path / 'hf' / 'hub'}) and cannot be fetched now (offline): fetch it "
                                   "once with `hf download someone/not-fetched`")


class FakeHub:
    """The Hub's resolve endpoint on loopback (HF_ENDPOINT points huggingface_hub at it), for `repos` (name ->
    {file: bytes}; a repo missing here is an empty one): HEAD says a file's commit, ETag and size (`declared`,
    {repo: {file: size}}, overrides a size; None leaves it out), GET sends the bytes (one each `trickle` seconds,
    when given). Records every request."""

    def __init__(self, repos: dict[str, dict[str, bytes]], declared: dict | None = None,
                 trickle: float = 0.0) -> None:
        import http.server
        import re
        import threading
        import time

        self.hits: list[tuple[str, str]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _headers(self) -> bytes | None:
                hub.hits.append((self.command, self.path))
                found = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", self.path)
                files = repos.get(found[1], {}) if found else {}
                if not found or found[2] not in files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound" if found else "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                body = files[found[2]]
                self.send_response(200)
                self.send_header("X-Repo-Commit", hashlib.sha1(found[1].encode()).hexdigest())
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                size = (declared or {}).get(found[1], {}).get(found[2], len(body))
                if size is not None:
                    self.send_header("Content-Length", str(size))
                self.end_headers()
                return body

            def do_HEAD(self):
                self._headers()

            def do_GET(self):
                body = self._headers() or b""
                step = 1 if trickle else max(1, len(body))
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                    time.sleep(trickle)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def fetched(self) -> list[str]:
        return [path.rsplit("/", 1)[1] for verb, path in self.hits if verb == "GET" and "/resolve/" in path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_hub():
    made: list[FakeHub] = []
    yield lambda *args, **kw: made.append(FakeHub(*args, **kw)) or made[-1]
    for hub in made:
        hub.close()


def _hub_env(tmp_path, hub: FakeHub | None, **extra) -> dict:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "COLUMNS": "200", **extra}
    env.pop("HF_HUB_OFFLINE", None)
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    return env


@pytest.mark.slow
def test_a_hub_repo_is_fetched_from_the_hub_then_read_from_the_cache(tmp_path, trained, cli, fake_hub):
    """Fetched over http from a Hub on loopback (sizes asked first), then read again with the Hub gone: offline
    mode, and a Hub that refuses the connection, both read the cache."""
    pytest.importorskip("huggingface_hub")
    from PIL import Image

    done = cli("export", str(trained / "runs" / "r"), "--format", "hub", "-o", str(tmp_path / "repo"))
    assert done.exit_code == 0, done.output
    hub = fake_hub({"someone/tiny-resnet": {f.name: f.read_bytes() for f in (tmp_path / "repo").iterdir()}})
    Image.new("L", (28, 28), 128).save(tmp_path / "gray.png")
    direct = _resnet("predict", tmp_path / "repo", tmp_path / "gray.png", "--json", env=_hub_env(tmp_path, None))
    assert direct.returncode == 0, direct.stderr

    done = _resnet("predict", "hf-hub:someone/tiny-resnet", tmp_path / "gray.png", "--json",
                   env=_hub_env(tmp_path, hub))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"] == json.loads(direct.stdout)["predictions"]
    assert hub.fetched() == ["model.safetensors", "config.json"]  # the card and the training config are not
    resolve = [hit for hit in hub.hits if "/resolve/" in hit[1]]
    for file in ("model.safetensors", "config.json"):
        verbs = [verb for verb, path in resolve if path.endswith("/" + file)]
        assert verbs[0] == "HEAD" and verbs.count("GET") == 1, resolve  # the size is asked before the bytes
    snapshot = tmp_path / "hf" / "hub" / "models--someone--tiny-resnet" / "snapshots"
    assert sorted(p.name for p in next(snapshot.iterdir()).iterdir()) == ["config.json", "model.safetensors"]

    hub.close()
    for extra in ({"HF_HUB_OFFLINE": "1"}, {}):  # offline mode; a Hub that refuses the connection
        again = _resnet("predict", "hf-hub:someone/tiny-resnet", tmp_path / "gray.png", "--json",
                        env=_hub_env(tmp_path, hub, **extra))
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["predictions"] == json.loads(direct.stdout)["predictions"]
    gone = _resnet("eval", "hf-hub:someone/other", env=_hub_env(tmp_path, hub))
    assert gone.returncode == 2 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    assert gone.stderr.startswith("error: hf-hub:someone/other is not in the Hugging Face cache (")
    assert "and cannot be fetched now (" in gone.stderr and "hf download someone/other" in gone.stderr


HUB_SNAPSHOTS = """
import sys
from resnet_cli import weights
from resnet_cli.errors import BadInput
weights.HUB_SECONDS = float(sys.argv[1])
for name in sys.argv[2:]:
    try:
        print(weights.hub_snapshot(name))
    except BadInput as e:
        print(e)
"""


def _hub_snapshots(tmp_path, hub: FakeHub, *names: str, seconds: float = 3600.0) -> list[str]:
    """What `weights.hub_snapshot` makes of each name, with huggingface_hub pointed at `hub` (HF_ENDPOINT is read
    when it is imported: a process of its own); torch is not imported."""
    done = subprocess.run([sys.executable, "-c", HUB_SNAPSHOTS, str(seconds), *names], env=_hub_env(tmp_path, hub),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.splitlines()


def test_a_hub_file_too_large_or_of_unknown_size_is_refused_before_it_is_fetched(tmp_path, fake_hub):
    pytest.importorskip("huggingface_hub")
    files = {"model.safetensors": b"{}", "config.json": b"{}"}
    hub = fake_hub({"a/huge": files, "a/config": files, "a/unsized": files, "a/no-weights": {"config.json": b"{}"}},
                   declared={"a/huge": {"model.safetensors": 17 * 2**30}, "a/config": {"config.json": 2**20 + 1},
                             "a/unsized": {"model.safetensors": None}})
    said = _hub_snapshots(tmp_path, hub, "hf-hub:a/huge", "hf-hub:a/config", "hf-hub:a/unsized", "hf-hub:a/no-weights")
    assert said == [
        "hf-hub:a/huge: model.safetensors is larger than 16384 MiB (the bound on a model.safetensors): refused",
        "hf-hub:a/config: config.json is larger than 1 MiB (the bound on a config.json): refused",
        "hf-hub:a/unsized: model.safetensors: the server did not say how large it is: refused (its size is checked "
        "before it is fetched)",
        "hf-hub:a/no-weights has no model.safetensors: not a model repo written by resnet export --format hub"]
    assert hub.fetched() == ["model.safetensors"]  # a/config's weights, whose size was within the bound


def test_a_hub_download_is_stopped_at_its_deadline(tmp_path, fake_hub):
    """A server that sends a byte now and then (each within huggingface_hub's 10 s read timeout) is stopped at
    the deadline on the whole download, not after its 1,000 bytes take 100 s."""
    pytest.importorskip("huggingface_hub")
    hub = fake_hub({"a/slow": {"model.safetensors": b"x" * 1000, "config.json": b"{}"}}, trickle=0.1)
    started = time.monotonic()
    assert _hub_snapshots(tmp_path, hub, "hf-hub:a/slow", seconds=0.5) == [
        "hf-hub:a/slow: model.safetensors took longer than 0.5 s to read (the deadline on a Hub download): stopped"]
    assert time.monotonic() - started < 30
    assert hub.fetched() == ["model.safetensors"]


def test_a_hub_name_the_hub_would_refuse_is_one_line(cli, monkeypatch, tmp_path):
    """huggingface_hub's own check raised HFValidationError, which reached the user as an internal error."""
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("a;b/c d", "-a/b", "a/b..c", "a", "a/b/c", "a/" + "b" * 97, "org/name."):
        result = cli("eval", f"hf-hub:{name}")
        assert result.exit_code == 2 and result.stderr.startswith(f"error: 'hf-hub:{name}"[:127]), result.output
        assert "give a Hub repo as hf-hub:ORG/NAME" in result.stderr and len(result.stderr.splitlines()) == 1
    for command in ("eval", "summary", "flops", "export"):  # a valid name: offline, not cached, said so
        fine = cli(command, "hf-hub:Org-1/tiny_resnet.v2@main", *(["-o", str(tmp_path / "x.onnx")]
                                                                 if command == "export" else []))
        assert fine.exit_code == 2 and "is not in the Hugging Face cache" in fine.stderr, (command, fine.stderr)


@pytest.mark.slow
def test_a_hub_folder_of_a_v15_resnet_is_timms_network(tmp_path, cli):
    """config.json names timm's architecture where it computes the same network, and timm (where installed) builds
    it from that config and loads the weights with strict=True, giving our outputs."""
    out = cli("build", "resnet50-v1.5", "--num-classes", "7", "-o", str(tmp_path / "r7.pt"))
    assert out.exit_code == 0, out.output
    out = cli("export", str(tmp_path / "r7.pt"), "--format", "hub", "-o", str(tmp_path / "r7"), "--dataset",
              "synthetic")  # 10 synthetic classes: 7 outputs cannot name them
    assert out.exit_code == 2
    assert "a 7-output resnet50-v1.5 cannot be a model of synthetic, which has 10 classes" in out.stderr
    out = cli("build", "resnet50-v1.5", "--num-classes", "10", "-o", str(tmp_path / "r50.pt"))
    assert out.exit_code == 0, out.output
    out = cli("export", str(tmp_path / "r50.pt"), "--format", "hub", "-o", str(tmp_path / "repo"),
              "--dataset", "synthetic")
    assert out.exit_code == 0, out.output
    assert "timm: resnet50" in out.stdout
    config = json.loads((tmp_path / "repo" / "config.json").read_text())
    assert config["architecture"] == "resnet50" and config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]  # synthetic images, as --dataset named
    assert config["resnet_cli"]["config"]["model"]["name"] == "resnet50-v1.5"
    build = config["resnet_cli"]["build"]  # the untrained architecture, by resnet build: the weights load into it
    assert build == "resnet build resnet50-v1.5 --num-classes 10 -o model.pt"
    out = cli(*build.split()[1:-1], str(tmp_path / "built.pt"))
    assert out.exit_code == 0, out.output
    from safetensors.torch import load_file

    from resnet_cli.checkpoint import model_from_checkpoint

    built = model_from_checkpoint(tmp_path / "built.pt").model
    built.load_state_dict(load_file(str(tmp_path / "repo" / "model.safetensors")), strict=True)
    out = cli("export", str(tmp_path / "r50.pt"), "--format", "hub", "-o", str(tmp_path / "repo"),
              "--dataset", "synthetic")
    assert out.exit_code == 2 and "is a folder that is not empty; pass --force" in out.stderr
    try:
        import timm
    except Exception:  # timm needs a torchvision built for this torch
        pytest.skip("timm is not installed here: the architecture name and tensor names are checked above")
    net = timm.create_model(config["architecture"], num_classes=config["num_classes"], pretrained=False)
    net.load_state_dict(load_file(str(tmp_path / "repo" / "model.safetensors")), strict=True)
    ours = model_from_checkpoint(tmp_path / "repo").model
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(net.eval()(x), ours(x), atol=1e-5)


def test_the_paper_stride_resnet50_is_not_called_timms():
    """timm's resnet50 strides the 3x3 convolution: the paper's resnet50 has the same tensors but another function,
    so config.json must not name it (timm would load it silently and compute something else)."""
    from resnet_cli.weights import config_json

    spec = {"classes": ["a", "b"], "channels": 3, "image_size": [224, 224], "resize": 256, "mean": [0.5] * 3,
            "std": [0.5] * 3}
    assert "architecture" not in config_json({"model": {"name": "resnet50"}}, spec, "raw")
    assert config_json({"model": {"name": "resnet50-v1.5"}}, spec, "raw")["architecture"] == "resnet50"
    assert "architecture" not in config_json({"model": {"name": "resnet34", "shortcut": "C"}}, spec, "raw")
    assert config_json({"model": {"name": "resnet18"}}, spec, "raw")["pretrained_cfg"]["crop_pct"] == 0.875


def test_header_parsing_refuses_what_is_not_safetensors():
    from resnet_cli.errors import BadInput
    from resnet_cli.weights import header

    good = b'{"__metadata__":{"a":"b"}}'
    assert header(struct.pack("<Q", len(good)) + good, "f")["__metadata__"] == {"a": "b"}
    for raw, words in ((b"PK\x03\x04" + b"\0" * 20, "no JSON header"), (struct.pack("<Q", 2**40) + b"{}", "no JSON"),
                       (struct.pack("<Q", 2) + b"[]", "no JSON header"), (struct.pack("<Q", 2) + b"{]", "")):
        with pytest.raises(BadInput) as e:
            header(raw, "f")
        assert words in str(e.value)


# ------------------------------------------------------------------------------------------------ timm's repos

def _timm_config(**pretrained) -> dict:
    """config.json as timm writes it for resnet18.a1_in1k (its keys; crop_pct and interpolation of that recipe)."""
    cfg = {"tag": "a1_in1k", "custom_load": False, "input_size": [3, 224, 224], "test_input_size": [3, 288, 288],
           "fixed_input_size": False, "interpolation": "bicubic", "crop_pct": 0.95, "test_crop_pct": 1.0,
           "crop_mode": "center", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "num_classes": 1000,
           "pool_size": [7, 7], "first_conv": "conv1", "classifier": "fc"}
    return {"architecture": "resnet18", "num_classes": 1000, "num_features": 512, "global_pool": "avg",
            "pretrained_cfg": {**cfg, **pretrained}}


def test_timms_config_json_names_our_network_its_evaluation_and_imagenets_classes():
    """timm's config.json for one of its ResNets that are ours: the network, the input as timm's validate.py
    evaluates it (test_input_size and test_crop_pct where given: 288 of 288; else input_size 224 and resize
    floor(224 / 0.95) = 235; bicubic), ImageNet-1k's classes for 1000 unnamed outputs (timm's rule);
    label_names where it gives them; what we would only approximate is refused in one line."""
    from resnet_cli.data.inputs import InputSpec
    from resnet_cli.errors import BadInput
    from resnet_cli.weights import config_json, from_timm

    config, spec = from_timm(_timm_config(), "config.json")
    assert config == {"model": {"name": "resnet18", "num_classes": 1000, "in_channels": 3},
                      "data": {"dataset": "imagefolder", "image_size": 224, "eval_image_size": 288,
                               "eval_resize": 288, "eval_interpolation": "bicubic"}}  # trained at 224, tested 288
    again = config_json(config, spec, "raw")["pretrained_cfg"]  # exported again, timm reads both sizes back
    assert (again["input_size"], again["test_input_size"], again["test_crop_pct"]) == ([3, 224, 224],
                                                                                      [3, 288, 288], 1.0)
    record = InputSpec.from_dict(spec)
    assert (record.image_size, record.resize, record.interpolation) == ((288, 288), 288, "bicubic")
    spec = from_timm(_timm_config(test_input_size=None, test_crop_pct=None), "c")[1]
    assert (spec["image_size"], spec["resize"]) == ([224, 224], 235)
    spec = from_timm(_timm_config(input_size=[3, 176, 176], test_input_size=[3, 224, 224], test_crop_pct=0.965,
                                  crop_pct=0.875, interpolation="bilinear"), "c")[1]  # torchvision's v2 recipe
    assert (spec["image_size"], spec["resize"], spec["interpolation"]) == ([224, 224], 232, "bilinear")
    assert record.classes[:2] == ("n01440764", "n01443537") and len(record.classes) == 1000
    assert record.descriptions[0] == "tench, Tinca tinca" and record.classes[281] == "n02123045"
    assert record.descriptions[281] == "tabby, tabby cat"
    assert from_timm({**_timm_config(), "architecture": "resnet50"}, "c")[0]["model"]["name"] == "resnet50-v1.5"
    legacy = {"architecture": "resnet34", "num_classes": 3, "input_size": [1, 64, 64], "crop_pct": 1.0,
              "interpolation": "bilinear", "labels": ["a", "b", "c"]}  # timm's older flat config.json
    config, spec = from_timm(legacy, "c")
    assert config["model"] == {"name": "resnet34", "num_classes": 3, "in_channels": 1}
    assert (spec["classes"], spec["resize"], spec["interpolation"]) == (["a", "b", "c"], 64, "bilinear")
    gaps = {**legacy, "input_size": [3, 64, 64], "labels": None, "label_names": {"0": "cat", "2": "dog"},
            "label_descriptions": {"cat": "a small feline"}}
    spec = from_timm(gaps, "c")[1]
    assert spec["classes"] == ["cat", "1", "dog"] and spec["descriptions"] == ["a small feline", "", ""]
    silent = from_timm({"architecture": "resnet18", "num_classes": 10, "pretrained_cfg": {}}, "c")[1]
    assert (silent["resize"], silent["interpolation"], silent["classes"][:2]) == (256, "bicubic", ["0", "1"])
    for found, said in [({**_timm_config(), "architecture": "resnet50d"},
                         "c names timm's 'resnet50d', which resnet-cli does not build (of timm's networks it builds "
                         "resnet18, resnet34, resnet50, resnet101, resnet152)"),
                        (_timm_config(crop_mode="squash"), "c evaluates with crop_mode 'squash' and interpolation "
                                                          "'bicubic'; resnet-cli evaluates a center crop, bilinear or "
                                                          "bicubic"),
                        (_timm_config(interpolation="lanczos"), "interpolation 'lanczos'"),
                        (_timm_config(test_crop_pct=1.5), "crop_pct (a fraction in (0, 1]) is not valid"),
                        (_timm_config(test_input_size=[3, 224, 192]), "input_size ([C, H, H])"),
                        ({**_timm_config(), "num_classes": 0}, "num_classes"),
                        ({**_timm_config(), "pretrained_cfg": []}, "pretrained_cfg and model_args must be JSON"),
                        ({**_timm_config(), "architecture": ["resnet18"]}, "names timm's \"['resnet18']\""),
                        (_timm_config(test_crop_pct=float("nan")), "crop_pct (a fraction in (0, 1]) is not valid"),
                        ({**_timm_config(), "label_names": "abc"}, "label_names must be a list")]:
        with pytest.raises(BadInput, match=None) as e:
            from_timm(found, "c")
        assert said in str(e.value), str(e.value)


def test_classes_named_by_imagenet_wnids_are_described_without_a_synset_words_file(tmp_path):
    """An image folder of ImageNet's WordNet ids says what each is from the shipped list (the 1000 in output
    order), its own synset_words.txt first; classes that are not all ImageNet-1k's get no words."""
    from resnet_cli.data.imagefolder import descriptions
    from resnet_cli.data.imagenet_classes import imagenet_1k
    from resnet_cli.data.inputs import InputSpec

    wnids, words = imagenet_1k()
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids) and wnids[0] == "n01440764"
    assert descriptions(tmp_path, ["n01443537", "n01440764"]) == ("goldfish, Carassius auratus", "tench, Tinca tinca")
    assert descriptions(tmp_path, ["n01440764", "cat"]) == ()
    (tmp_path / "synset_words.txt").write_text("n01440764 a fish of our own\n")
    assert descriptions(tmp_path, ["n01440764", "n01443537"]) == ("a fish of our own", "")
    named = InputSpec.imagenet(1000)
    assert named.classes == wnids and named.descriptions == words and InputSpec.imagenet(10).descriptions == ()


def test_timms_crop_pct_is_applied_as_timm_applies_it_and_written_so_timm_reads_it_back():
    """resize = floor(crop / crop_pct), timm's rule (224 / 0.95 -> 235, where rounding gives 236); the crop_pct a
    Hub repo's config.json says gives back the resize we evaluated at, under that rule."""
    from resnet_cli.data.inputs import crop_pct_of, resize_of

    assert (resize_of(224, 0.95), resize_of(224, 0.875), resize_of(24, 0.75)) == (235, 256, 32)
    assert crop_pct_of(224, 256) == 0.875
    assert all(resize_of(h, crop_pct_of(h, r)) == r for h in (24, 28, 32, 224, 288) for r in range(h, 2 * h))


@pytest.mark.slow
def test_a_timm_hub_repo_predicts_and_evaluates_as_timm_would(tmp_path, cli, fake_hub):
    """`hf-hub:timm/...`: no --model, the image prepared as timm's validate.py prepares it (test_input_size 288,
    test_crop_pct 1.0, bicubic, centre crop, its mean/std: the probabilities equal a forward pass on that by hand;
    eval --image-size 224 --crop-pct 0.95 is its training size, 224 from floor(224 / 0.95)), ImageNet-1k's
    class names; eval on a folder of ImageNet classes needs only --data-dir; a bare torchvision state_dict with
    1000 outputs is named the same way. ~11 s: the hub fetch runs in a process of its own, and ONNX exports."""
    pytest.importorskip("huggingface_hub")
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    from resnet_cli.models import build_model

    torch.manual_seed(0)
    net = build_model("resnet18", num_classes=1000).eval()
    with torch.no_grad():
        net.fc.bias.copy_(torch.linspace(-3, 3, 1000))  # a spread of probabilities that names one class
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    repo = tmp_path / "repo"
    repo.mkdir()
    save_file(state, str(repo / "model.safetensors"))  # timm's file: no metadata of ours
    (repo / "config.json").write_text(json.dumps(_timm_config()))
    hub = fake_hub({"timm/resnet18.a1_in1k": {f.name: f.read_bytes() for f in repo.iterdir()}})
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "photo.png")

    done = _resnet("predict", "hf-hub:timm/resnet18.a1_in1k", tmp_path / "photo.png", "--json", "--device", "cpu",
                   env=_hub_env(tmp_path, hub))
    assert done.returncode == 0, done.stderr
    top = json.loads(done.stdout)["predictions"][0]["top"]
    assert json.loads(done.stdout)["input"] == {"image_size": 288, "resize": 288, "interpolation": "bicubic"}

    img = Image.open(tmp_path / "photo.png").convert("RGB").resize((384, 288), Image.BICUBIC)  # 400 x 300 -> 288
    left, up = (384 - 288) // 2, 0
    x = torch.from_numpy(np.asarray(img.crop((left, up, left + 288, up + 288)), dtype=np.float32) / 255)
    x = ((x - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])).permute(2, 0, 1)
    with torch.no_grad():
        p, i = torch.softmax(net(x[None]), 1)[0].topk(5)
    assert [t["index"] for t in top] == i.tolist()
    assert [t["prob"] for t in top] == pytest.approx(p.tolist(), abs=1e-4)
    from resnet_cli.data.imagenet_classes import imagenet_1k

    wnids, words = imagenet_1k()
    assert [(t["class"], t["description"]) for t in top] == [(wnids[k], words[k]) for k in i.tolist()]

    summary = cli("summary", repo)  # the folder `hf download timm/resnet18.a1_in1k --local-dir repo` makes
    assert summary.exit_code == 0 and "resnet18 at 288x288" in summary.stdout, summary.output
    for wnid in wnids[:2]:
        (tmp_path / "inet" / "val" / wnid).mkdir(parents=True)
        Image.open(tmp_path / "photo.png").save(tmp_path / "inet" / "val" / wnid / "a.png")
    ev = cli.json("eval", repo, "--data-dir", tmp_path / "inet", "--device", "cpu")
    assert (ev["count"], ev["image_size"], ev["resize"]) == (2, 288, 288)
    train_size = cli.json("eval", repo, "--data-dir", tmp_path / "inet", "--image-size", "224", "--crop-pct", "0.95")
    assert (train_size["image_size"], train_size["resize"], train_size["interpolation"]) == (224, 235, "bicubic")
    assert [c["description"] for c in ev["per_class"]][:2] == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    pytest.importorskip("onnxruntime")
    out = cli("export", repo, "-o", tmp_path / "r18.onnx")  # the record travels: bicubic, 224 from 235
    assert out.exit_code == 0, out.output
    again = cli.json("eval", tmp_path / "r18.onnx", "--data-dir", tmp_path / "inet", "--dataset", "imagefolder")
    assert (again["resize"], again["interpolation"]) == (288, "bicubic")
    assert again["loss"] == pytest.approx(ev["loss"], abs=1e-4)
    onnx = cli.json("predict", tmp_path / "r18.onnx", tmp_path / "photo.png")
    assert [t["prob"] for t in onnx["predictions"][0]["top"]] == pytest.approx(p.tolist(), abs=1e-4)
    out = cli("export", repo, "--format", "hub", "-o", tmp_path / "again")  # and back out, for timm to read
    assert out.exit_code == 0, out.output
    assert sorted(f.name for f in (tmp_path / "again").iterdir()) == ["README.md", "config.json",
                                                                       "model.safetensors"]  # no recipe to give
    card = (tmp_path / "again" / "README.md").read_text()
    assert f"weights from {repo}, not trained by resnet-cli, for imagefolder" in card and "## Training" not in card
    written = json.loads((tmp_path / "again" / "config.json").read_text())["pretrained_cfg"]
    assert (written["input_size"], written["test_input_size"], written["test_crop_pct"], written["interpolation"]) \
        == ([3, 224, 224], [3, 288, 288], 1.0, "bicubic")  # trained at 224, evaluated at 288 / 1.0, as it came
    assert written["label_descriptions"]["n01440764"] == "tench, Tinca tinca"
    nowhere = cli("eval", repo, "--device", "cpu", env={"RESNET_CLI_DATA": ""})
    assert nowhere.exit_code == 2 and "does not say where its imagefolder data is" in nowhere.stderr

    torch.save(state, tmp_path / "torchvision.pth")  # a bare state_dict: ImageNet's conventions and classes
    bare = cli.json("predict", tmp_path / "torchvision.pth", tmp_path / "photo.png", "--model", "resnet18")
    assert bare["predictions"][0]["top"][0]["class"] in wnids and bare["predictions"][0]["top"][0]["description"]


@pytest.mark.slow
def test_init_refuses_the_other_stride_of_the_same_tensors(tmp_path):
    """timm's resnet50 is our resnet50-v1.5: its tensors load into the paper's resnet50 and compute another
    function, so --init refuses that pairing and names the model to train (as it does for torchvision:resnet50);
    a headless backbone (timm's num_classes=0) starts a new head. ~1.5 s: three ResNet-50s."""
    from safetensors.torch import save_file

    from resnet_cli.errors import BadInput
    from resnet_cli.models import build_model
    from resnet_cli.train.init_weights import init_from

    (tmp_path / "repo").mkdir()
    state = build_model("resnet50-v1.5", num_classes=1000).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "repo" / "model.safetensors"))
    (tmp_path / "repo" / "config.json").write_text(json.dumps(_timm_config()).replace('"resnet18"', '"resnet50"'))
    with pytest.raises(BadInput) as e:
        init_from(build_model("resnet50", num_classes=3), tmp_path / "repo", "resnet50")
    assert "its weights are a resnet50-v1.5, not a resnet50 (the same tensors" in str(e.value)
    assert str(e.value).endswith("train --model resnet50-v1.5")
    said = init_from(build_model("resnet50-v1.5", num_classes=3), tmp_path / "repo", "resnet50-v1.5")
    assert said.startswith("model.init: loaded 318 of 320 tensors") and "new head fc (1000 -> 3 classes)" in said
    # a feature extractor (timm's num_classes=0: no fc): its tensors start a new head
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("fc.")},
              str(tmp_path / "repo" / "model.safetensors"))
    (tmp_path / "repo" / "config.json").write_text(json.dumps({"architecture": "resnet50", "num_classes": 0}))
    said = init_from(build_model("resnet50-v1.5", num_classes=3), tmp_path / "repo", "resnet50-v1.5")
    assert said.startswith("model.init: loaded 318 of 320 tensors") and "new head fc (none -> 3 classes)" in said
