"""Data: the CIFAR download path against a loopback server, IDX files, safe extraction, synthetic data."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from fakedata import cifar10_archive, idx_bytes, write_idx_set, write_tar
from resnet_cli.data import cifar, idx, load_data
from resnet_cli.data.download import check_url, download, md5_file, safe_extract
from resnet_cli.gate import Limits
from resnet_cli.errors import BadInput
from conftest import last_json


@pytest.fixture
def fake_cifar(server, monkeypatch):
    """Serve a generated cifar-10-python.tar.gz and point the cifar10 spec at it."""
    root, base, hits = server
    archive = root / "cifar-10-python.tar.gz"
    member_md5 = cifar10_archive(archive)
    spec = cifar.SPECS["cifar10"]
    patched = dataclasses.replace(
        spec, url=f"{base}/cifar-10-python.tar.gz", md5=md5_file(archive),
        train=tuple((n, member_md5[n]) for n, _ in spec.train), test=(("test_batch", member_md5["test_batch"]),),
        meta=("batches.meta", member_md5["batches.meta"]))
    monkeypatch.setitem(cifar.SPECS, "cifar10", patched)
    return archive, hits


def test_cifar_download_verify_and_load(fake_cifar, tmp_path):
    _, hits = fake_cifar
    root = tmp_path / "cache"
    train_x, train_y, test_x, test_y, names = cifar.load("cifar10", root)
    assert train_x.shape == (100, 3, 32, 32) and train_x.dtype == torch.uint8
    assert train_y.shape == (100,) and test_x.shape == (20, 3, 32, 32)
    assert names == [f"name{i}" for i in range(10)]
    assert hits == ["/cifar-10-python.tar.gz"]
    assert not list(root.rglob(".*")), "temporary files left behind"
    umask = os.umask(0)
    os.umask(umask)
    archive = next(root.rglob("*.tar.gz"))
    assert archive.stat().st_mode & 0o777 == 0o666 & ~umask  # written by files.atomic_write like any new file
    # Valid files present: no network at all.
    cifar.load("cifar10", root)
    assert len(hits) == 1


def test_cifar_md5_mismatch_is_refused_and_not_kept(fake_cifar, tmp_path, monkeypatch):
    spec = cifar.SPECS["cifar10"]
    monkeypatch.setitem(cifar.SPECS, "cifar10", dataclasses.replace(spec, md5="0" * 32))
    root = tmp_path / "cache"
    with pytest.raises(BadInput, match="checksum mismatch"):
        cifar.load("cifar10", root)
    assert root.is_dir() and not list(root.rglob("*")), "nothing is kept, no temporary file either"


def test_cifar_offline_says_which_files_to_put_where(cli, tmp_path, monkeypatch):
    spec = cifar.SPECS["cifar10"]
    monkeypatch.setitem(cifar.SPECS, "cifar10", dataclasses.replace(spec, url="http://127.0.0.1:9/none.tar.gz"))
    result = cli("train", "--preset", "cifar", "--data-dir", tmp_path, "--epochs", "1")
    assert result.exit_code == 2
    assert "put cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a)" in result.stderr
    assert str(tmp_path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.default_device
def test_cifar_training_run_on_served_archive(fake_cifar, cli, tmp_path):
    result = cli("train", "--preset", "cifar", "--data-dir", tmp_path / "c", "--set", "train.steps=3",
                 "--batch-size", "16", "--run-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 2  # the preset holds out the paper's 5000 validation images
    assert "data.val_split 5000 must be less than the 100 training images" in result.stderr
    result = cli("train", "--preset", "cifar", "--data-dir", tmp_path / "c", "--set", "train.steps=3",
                 "--batch-size", "16", "--run-dir", tmp_path / "runs", "--set", "data.val_split=20", "--json")
    assert result.exit_code == 0, result.output
    out = last_json(result.stdout)
    assert out["selected_by"] == "val_top1" and 0 <= out["final"]["val_top1"] <= 1
    assert (tmp_path / "runs" / "resnet20-cifar10" / "last.pt").exists()


def test_http_is_refused_off_loopback():
    with pytest.raises(BadInput, match="only https"):
        check_url("http://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    with pytest.raises(BadInput, match="only https"):
        check_url("ftp://example.org/x")
    check_url("https://example.org/x")
    check_url("http://127.0.0.1:8000/x")


def test_download_failure_is_one_clear_error(tmp_path):
    with pytest.raises(BadInput, match="cannot download"):
        download("http://127.0.0.1:9/missing", tmp_path / "x", None, Limits(seconds=2))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("member,kind", [
    ("../evil.txt", "outside the folder"),
    ("/abs/evil.txt", "absolute path"),
    ("a/../../evil.txt", "outside the folder"),
])
def test_extraction_refuses_escaping_members(tmp_path, member, kind):
    archive = tmp_path / "bad.tar.gz"
    write_tar(archive, {"ok.txt": b"fine", member: b"evil"})
    with pytest.raises(BadInput, match=kind):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "ok.txt").exists()  # nothing is extracted from a bad archive


def test_extraction_refuses_links_out_and_devices(tmp_path):
    archive = tmp_path / "link.tar.gz"
    write_tar(archive, {}, links={"data/passwd": "/etc/passwd"})
    with pytest.raises(BadInput, match="link that points outside"):
        safe_extract(archive, tmp_path / "out")
    import tarfile

    dev = tmp_path / "dev.tar"
    with tarfile.open(dev, "w") as tar:
        info = tarfile.TarInfo("null")
        info.type = tarfile.CHRTYPE
        tar.addfile(info)
    with pytest.raises(BadInput, match="device"):
        safe_extract(dev, tmp_path / "out2")


def test_extraction_never_writes_through_a_link_inside_the_folder(fake_cifar, tmp_path):
    """A batch that is a link to a user's file (in the data folder, so tarfile's filter lets it be) fails its
    md5 and is extracted again: through the link, that overwrote the user's file. Refused, one line; a link in a
    folder on the way too; nothing is written."""
    root = tmp_path / "cache"
    cifar.load("cifar10", root)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    notes = root / "notes.txt"
    notes.write_text("mine")
    batch.unlink()
    batch.symlink_to("../notes.txt")
    with pytest.raises(BadInput, match=r"data_batch_2 is a symbolic link: extracting cifar-10-batches-py/data_batch_2 "
                                       r"would write through it, over the file it names; remove the link"):
        cifar.load("cifar10", root)
    assert notes.read_text() == "mine"
    batch.unlink()
    folder = root / "cifar-10-batches-py"
    folder.rename(root / "elsewhere")
    folder.symlink_to("elsewhere")
    (root / "elsewhere" / "data_batch_2").symlink_to("../notes.txt")
    with pytest.raises(BadInput, match="cifar-10-batches-py is a symbolic link"):
        cifar.load("cifar10", root)
    assert notes.read_text() == "mine"
    (root / "elsewhere" / "data_batch_2").unlink()
    folder.unlink()
    os.mkfifo(folder)
    with pytest.raises(BadInput, match=r"cifar-10-batches-py is in the way of extracting cifar-10-batches-py\S* "
                                       r"\(it is not a folder\); remove it"):
        cifar.load("cifar10", root)
    folder.unlink()
    assert cifar.load("cifar10", root)[0].shape == (100, 3, 32, 32)  # the links gone: extracted, loaded


def _published(path: Path) -> list[tuple[str, str]]:
    """`path` as a file a spec lists, with its own md5: what a doctored copy of a published file would be."""
    return [(path.name, md5_file(path))]


def test_cifar_pickle_with_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    (tmp_path / "batch").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(BadInput, match="not a valid CIFAR batch"):
        cifar._read_verified(tmp_path, _published(tmp_path / "batch"))
    assert not (tmp_path / "pwned").exists()


def test_a_cifar_batch_is_read_within_its_bound_and_a_record_cannot_claim_what_the_file_lacks(tmp_path, monkeypatch):
    import struct

    claim = b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"abc"  # BINBYTES8: 2^60 bytes follow (3 do)
    (tmp_path / "claims").write_bytes(claim)
    with pytest.raises(BadInput, match="claims is not a valid CIFAR batch: a record claims more bytes than the file holds"):
        cifar._read_verified(tmp_path, _published(tmp_path / "claims"))
    monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 1000)
    (tmp_path / "large").write_bytes(b"\0" * 1001)
    with pytest.raises(cifar._Stale, match="large"):  # not read: extracted again from the archive, over it
        cifar._read_verified(tmp_path, _published(tmp_path / "large"))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BadInput, match="is a FIFO, not a regular file"):  # refused, not extracted over (would block)
        cifar._read_verified(tmp_path, [("fifo", "0" * 32)])


def test_a_cifar_file_is_read_once_and_checked_on_the_bytes_it_unpickles(fake_cifar, tmp_path, monkeypatch):
    """The md5 is taken on the bytes the unpickler gets: one read per file (no window for the file to change
    between its check and its use, no second pass over 180 MB)."""
    from resnet_cli import gate

    root = tmp_path / "cache"
    cifar.load("cifar10", root)
    reads = []
    real = gate.read_file
    monkeypatch.setattr(gate, "read_file", lambda path, *a, **k: reads.append(Path(path).name) or real(path, *a, **k))
    monkeypatch.setattr(cifar, "md5_file", lambda path: pytest.fail(f"{path} hashed apart from its read"))
    cifar.load("cifar10", root)
    spec = cifar.SPECS["cifar10"]
    assert sorted(reads) == sorted(name for name, _ in spec.train + spec.test + (spec.meta,))


def test_cifar_meta_file_is_checked_like_the_batches(fake_cifar, tmp_path):
    """The class names' file has a published md5 too: a changed one is put back from the verified archive, and
    with no archive to take it from, refused by name."""
    root = tmp_path / "cache"
    names = cifar.load("cifar10", root)[4]
    meta = root / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(meta.read_bytes().replace(b"name3", b"evil3"))
    assert cifar.load("cifar10", root)[4] == names  # extracted again from the archive
    meta.write_bytes(meta.read_bytes().replace(b"name3", b"evil3"))
    (root / "cifar-10-python.tar.gz").unlink()
    with pytest.raises(BadInput, match="not available"):
        cifar.load("cifar10", root, download_ok=False)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_on_generated_files(tmp_path, gz):
    write_idx_set(tmp_path / "mnist", n_train=50, n_test=20, gz=gz)
    train_x, train_y, test_x, test_y, names = idx.load("mnist", tmp_path, download_ok=False)
    assert train_x.shape == (50, 1, 28, 28) and train_x.dtype == torch.uint8
    assert train_y.shape == (50,) and train_y.dtype == torch.int64 and int(train_y.max()) < 10
    assert test_x.shape == (20, 1, 28, 28)
    assert names == [str(i) for i in range(10)]


def test_idx_truncated_and_bad_magic(tmp_path):
    import numpy as np

    raw = idx_bytes(np.zeros((4, 28, 28)))
    (tmp_path / "cut").write_bytes(raw[:-10])
    with pytest.raises(BadInput, match="truncated"):
        idx.read_idx(tmp_path / "cut")
    (tmp_path / "magic").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(BadInput, match="bad magic"):
        idx.read_idx(tmp_path / "magic")
    import struct

    wraps = struct.pack(">HBB", 0, 8, 4) + struct.pack(">4I", *(2**16,) * 4)  # 2^64 bytes claimed: 0 in int64
    (tmp_path / "wraps").write_bytes(wraps)
    with pytest.raises(BadInput, match=r"wraps is truncated: 20 bytes, expected 18446744073709551636 for shape "
                                       r"\(65536, 65536, 65536, 65536\)"):
        idx.read_idx(tmp_path / "wraps")


def test_idx_missing_files_offline(tmp_path):
    with pytest.raises(BadInput, match="mnist is not available"):
        idx.load("mnist", tmp_path, download_ok=False)


def test_fashion_checksum_mismatch_names_the_file(tmp_path):
    write_idx_set(tmp_path / "fashion-mnist", gz=True)
    with pytest.raises(BadInput, match="checksum mismatch for .*train-images-idx3-ubyte.gz"):
        idx.load("fashion-mnist", tmp_path, download_ok=False)


def test_real_fashion_mnist(fashion_dir):
    train_x, train_y, test_x, test_y, names = idx.load("fashion-mnist", fashion_dir, download_ok=False)
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(train_y).tolist() == [6000] * 10
    assert torch.bincount(test_y).tolist() == [1000] * 10
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot"


def test_synthetic_is_seeded_and_sized():
    from resnet_cli.config import DataConfig

    cfg = DataConfig(dataset="synthetic", image_size=20, channels=2, classes=4, synthetic_train=40,
                     synthetic_test=12, train_limit=30)
    a, b = load_data(cfg), load_data(cfg)
    assert a.train_x.shape == (30, 2, 20, 20) and a.test_x.shape == (12, 2, 20, 20)
    assert torch.equal(a.train_x, b.train_x) and a.num_classes == 4
    assert len(a.input.mean) == 2 and all(s > 0 for s in a.input.std)


def test_channel_stats_are_the_exact_mean_and_std_of_each_channel():
    """The normalisation of IDX and CIFAR runs: per-channel mean and (population) std in [0, 1] units, equal to a
    float64 computation over the whole set; a constant channel gets a tiny std, not zero."""
    from resnet_cli.data.loading import channel_stats

    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randint(0, 256, (300, 20, 20), generator=g),
                     torch.randint(0, 40, (300, 20, 20), generator=g),
                     torch.full((300, 20, 20), 7)], dim=1).to(torch.uint8)
    mean, std = channel_stats(x)
    f = x.double() / 255
    assert mean.dtype == torch.float32 and mean.shape == std.shape == (3,)
    assert torch.allclose(mean.double(), f.mean(dim=(0, 2, 3)), rtol=0, atol=1e-7)
    assert torch.allclose(std[:2].double(), f.std(dim=(0, 2, 3), correction=0)[:2], rtol=0, atol=1e-7)
    assert mean[2].item() == pytest.approx(7 / 255) and 0 < std[2].item() <= 1e-5
