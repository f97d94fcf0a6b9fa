"""`resnet data imagenet`: ImageNet's ILSVRC2012 archives (here, miniatures with the same names and layout: a tar
of per-class tars, a flat validation tar, a devkit with meta.mat and the validation ground truth) turned into the
image folders train reads, checked, resumable, and refusing any name the archives do not hold."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest

scipy_io = pytest.importorskip("scipy.io")
np = pytest.importorskip("numpy")
pytest.importorskip("PIL")

from fakedata import tar_bytes  # noqa: E402

from resnet_cli.data import imagenet  # noqa: E402

# The devkit numbers its classes in its own order (not the WordNet IDs' sorted order): ID 1 is the shark here.
CLASSES = {1: "n01484850", 2: "n01440764", 3: "n01443537"}
WORDS = {"n01484850": "great white shark, white shark, man-eater", "n01440764": "tench, Tinca tinca",
         "n01443537": "goldfish, Carassius auratus"}
TRUTH = [2, 1, 3, 3, 2, 1, 1]  # the class number of validation image 1, 2, ...


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(buf, format="JPEG")
    return buf.getvalue()


def _tar(members: dict[str, bytes], gz: bool = False, links: dict[str, str] | None = None) -> bytes:
    return tar_bytes(members, links, gz)


def _meta_mat() -> bytes:
    """meta.mat as the devkit has it: a struct array `synsets`, the classes (no children) and a synset above them."""
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O"),
              ("children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")]
    rows = [(n, w, WORDS[w], "a fish", 0, np.zeros(0), 0, 3) for n, w in CLASSES.items()]
    rows.append((4, "n01440000", "fishes", "above them", 3, np.array([1, 2, 3]), 1, 0))
    buf = io.BytesIO()
    scipy_io.savemat(buf, {"synsets": np.array(rows, dtype=fields).reshape(-1, 1)})
    return buf.getvalue()


@pytest.fixture
def archives(tmp_path, monkeypatch):
    """A folder with the three archives (published names, these files' md5s as the published ones); returns
    (folder, {train image name: bytes}, {val image name: bytes})."""
    src = tmp_path / "downloads"
    src.mkdir()
    train, inner = {}, {}
    for i, wnid in enumerate(sorted(CLASSES.values())):
        images = {f"{wnid}_{k}.JPEG": _jpeg(10 * i + k) for k in (10, 257, 3)}
        train.update(images)
        inner[f"{wnid}.tar"] = _tar(images)
    val = {f"ILSVRC2012_val_{n:08d}.JPEG": _jpeg(100 + n) for n in range(1, len(TRUTH) + 1)}
    devkit = {imagenet.DEVKIT_META: _meta_mat(),
              imagenet.DEVKIT_TRUTH: "".join(f"{c}\n" for c in TRUTH).encode()}
    files = {"train": _tar(inner), "val": _tar(val), "devkit": _tar(devkit, gz=True)}
    published = {}
    for key, data in files.items():
        name = imagenet.ARCHIVES[key][0]
        (src / name).write_bytes(data)
        published[key] = (name, hashlib.md5(data).hexdigest())
    monkeypatch.setattr(imagenet, "ARCHIVES", published)
    return src, train, val


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_archives_become_the_image_folders_train_reads(cli, tmp_path, archives):
    src, train, val = archives
    out = tmp_path / "imagenet"
    done = cli("data", "imagenet", str(src), str(out))
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == (f"wrote {out}/: 9 train images and 7 val images in 3 classes; train on it with "
                                   f"resnet train --preset imagenet --data-dir {out}")
    expected = {f"train/{name.split('_')[0]}/{name}": data for name, data in train.items()}
    expected.update({f"val/{CLASSES[TRUTH[int(name[15:23]) - 1]]}/{name}": data for name, data in val.items()})
    got = _tree(out)
    assert json.loads(got.pop(imagenet.MARKER)) == {"finished": {"train": 9, "train_classes": 3, "val": 7,
                                                                 "val_classes": 3}}
    assert got.pop("synset_words.txt").decode() == "".join(f"{w} {WORDS[w]}\n" for w in sorted(WORDS))
    assert got == expected  # every image byte for byte, each validation image in its devkit class
    assert sorted(p.name for p in (out / "val").iterdir()) == sorted(CLASSES.values())

    from resnet_cli.data.imagefolder import scan

    for split, count in (("train", 9), ("val", 7)):
        samples, classes = scan(out / split)
        assert classes == sorted(CLASSES.values()) and len(samples) == count

    again = cli("data", "imagenet", str(src), str(out), "--json")  # finished: the archives are not read again
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"out": str(out), "train": 9, "val": 7, "classes": 3, "kept": 16}


def test_an_interrupted_preparation_goes_on_and_reads_no_finished_split_again(cli, tmp_path, archives):
    src, train, val = archives
    name = imagenet.ARCHIVES["val"][0]
    whole = (src / name).read_bytes()
    (src / name).write_bytes(whole[:len(whole) // 2])  # the validation download cut short
    out = tmp_path / "imagenet"
    done = cli("data", "imagenet", str(src), str(out))
    assert done.exit_code == 2 and len(done.stderr.strip().splitlines()) == 1, done.output
    assert str(src / name) in done.stderr and "a download cut short" in done.stderr
    assert json.loads((out / imagenet.MARKER).read_text()) == {"finished": {"train": 9, "train_classes": 3}}
    written = {p.name for p in (out / "val").rglob("*.JPEG")}
    assert 0 < len(written) < len(val)

    (src / name).write_bytes(whole)
    train_tar = src / imagenet.ARCHIVES["train"][0]
    train_tar.write_bytes(_tar({}))  # train/ is finished: its archive (now another one) is not read
    done = cli("data", "imagenet", str(src), str(out), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"out": str(out), "train": 9, "val": 7, "classes": 3,
                                       "kept": 9 + len(written)}
    assert len(list((out / "val").rglob("*.JPEG"))) == 7

    done = cli("data", "imagenet", str(src), str(out), "--force")  # --force reads every archive again
    assert done.exit_code == 2 and f"{train_tar} is not the archive image-net.org publishes" in done.stderr


def test_a_torn_image_of_an_earlier_run_is_written_again(cli, tmp_path, archives):
    """After a power cut an image renamed into place can be short (no fsync in a bulk write): its size differs
    from its member's, so the next run writes it again."""
    src, train, _ = archives
    out = tmp_path / "imagenet"
    (out / "train" / "n01440764").mkdir(parents=True)
    (out / imagenet.MARKER).write_text(json.dumps({"finished": {}}))
    torn = out / "train" / "n01440764" / "n01440764_10.JPEG"
    torn.write_bytes(train[torn.name][:5])
    done = cli("data", "imagenet", str(src), str(out), "--json")
    assert done.exit_code == 0, done.output
    assert torn.read_bytes() == train[torn.name] and json.loads(done.stdout)["kept"] == 0


@pytest.mark.parametrize("case", ["outer-name", "inner-dotdot", "inner-other-class", "link", "val-name",
                                  "val-number", "too-large"])
def test_a_member_the_archives_do_not_hold_is_refused_and_nothing_lands_outside(cli, tmp_path, archives, case,
                                                                                monkeypatch):
    src, _, _ = archives
    image = _jpeg(1)
    train_name, val_name = imagenet.ARCHIVES["train"][0], imagenet.ARCHIVES["val"][0]
    hostile = {
        "outer-name": (train_name, _tar({"../n01440764.tar": _tar({"n01440764_1.JPEG": image})}), "'../n01440764.tar'"),
        "inner-dotdot": (train_name, _tar({"n01440764.tar": _tar({"../../escaped.JPEG": image})}),
                         "n01440764.tar: '../../escaped.JPEG' is not a name"),
        "inner-other-class": (train_name, _tar({"n01440764.tar": _tar({"n01443537_1.JPEG": image})}),
                              "holds n01443537_1.JPEG, an image of another class"),
        "link": (train_name, _tar({}, links={"n01440764.tar": "/etc/passwd"}), "is not a regular file"),
        "val-name": (val_name, _tar({"ILSVRC2012_val_00000001.JPEG/../../x.JPEG": image}), "is not a name"),
        "val-number": (val_name, _tar({"ILSVRC2012_val_00000099.JPEG": image}), "has no label in the devkit"),
        "too-large": (train_name, _tar({"n01440764.tar": _tar({"n01440764_1.JPEG": image})}),
                      "larger than 0 MiB, the bound on an image"),
    }
    name, data, why = hostile[case]
    (src / name).write_bytes(data)
    if case == "too-large":
        monkeypatch.setattr(imagenet, "MAX_IMAGE_BYTES", 100)
    out = tmp_path / "work" / "imagenet"
    done = cli("data", "imagenet", str(src), str(out))
    assert done.exit_code == 2 and why in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.output
    outside = [p for p in (tmp_path / "work").rglob("*") if not str(p).startswith(str(out))]
    assert outside == []
    assert not list((out / ("val" if name == val_name else "train")).rglob("*.JPEG"))  # refused before any image


def test_what_is_refused_before_a_byte_is_written(cli, tmp_path, archives):
    src, _, _ = archives
    out = tmp_path / "imagenet"
    devkit = src / imagenet.ARCHIVES["devkit"][0]
    good = devkit.read_bytes()
    devkit.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    done = cli("data", "imagenet", str(src), str(out))
    assert done.exit_code == 2 and "is not the archive image-net.org publishes (md5" in done.stderr
    assert not out.exists()
    devkit.write_bytes(good)

    out.mkdir()
    (out / "notes.txt").write_text("mine")
    done = cli("data", "imagenet", str(src), str(out))
    assert done.exit_code == 2 and "is not empty and was not written by resnet data imagenet" in done.stderr
    assert cli("data", "imagenet", str(src), str(out), "--force").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"

    other = tmp_path / "elsewhere"
    other.mkdir()
    linked = tmp_path / "linked"
    (linked / "val").mkdir(parents=True)
    (linked / imagenet.MARKER).write_text("{}")
    os.symlink(other, linked / "val" / CLASSES[2])
    os.symlink(other, linked / "train")
    for where in ("train", "val/" + CLASSES[2]):  # a split's folder, then a class folder
        done = cli("data", "imagenet", str(src), str(linked))
        assert done.exit_code == 2 and f"{linked / where} is a link or a file where a folder of images goes" \
            in done.stderr, done.stderr
        assert list(other.iterdir()) == []
        if where == "train":
            (linked / "train").unlink()

    devkit.unlink()
    done = cli("data", "imagenet", str(src), str(tmp_path / "x"))
    assert done.exit_code == 2 and "needs the devkit for its classes: put ILSVRC2012_devkit_t12.tar.gz" in done.stderr
    for key in ("train", "val"):
        (src / imagenet.ARCHIVES[key][0]).unlink()
    done = cli("data", "imagenet", str(src), str(tmp_path / "x"))
    assert done.exit_code == 2 and "holds neither ILSVRC2012_img_train.tar nor" in done.stderr


def test_a_full_disk_is_one_line_with_the_command_that_goes_on(cli, tmp_path, archives, monkeypatch):
    import errno

    src, train, _ = archives
    out = tmp_path / "imagenet"
    real_write = Path.write_bytes
    calls = {"n": 0}

    def filling_write(path, data):  # each image is written by Python into its temporary file
        calls["n"] += 1
        if calls["n"] > 4:
            real_write(path, bytes(data)[:10])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", filling_write)
    done = cli("data", "imagenet", str(src), str(out))
    assert done.exit_code == 1 and len(done.stderr.strip().splitlines()) == 1, done.output
    assert "(no space left on device); what is written is kept: make room, then run the same command again " \
           f"(resnet data imagenet {src} {out}): it goes on where it stopped" in done.stderr
    assert not list(out.rglob(".*.tmp.*"))  # no temporary file left
    monkeypatch.setattr(Path, "write_bytes", real_write)
    done = cli("data", "imagenet", str(src), str(out), "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["kept"] == 4, done.output
    assert {p.name: p.read_bytes() for p in (out / "train").rglob("*.JPEG")} == train


def test_training_on_the_archives_folder_says_how_to_make_the_image_folders(cli, archives):
    src = archives[0]
    done = cli("train", "--preset", "smoke", "--set", "data.dataset=imagefolder", "--data-dir", str(src))
    assert done.exit_code == 2 and done.stderr.strip() == (
        f"error: image folder {src / 'train'} does not exist (expected train/<class>/* and val/<class>/*); {src} "
        f"holds ImageNet's archives: make the image folders with resnet data imagenet {src} OUT, then train with "
        "--data-dir OUT")


def test_what_each_class_is_travels_from_the_folder_to_the_checkpoint_and_back():
    """synset_words.txt (Caffe's lines; data imagenet writes it) describes an image folder's classes: the input
    record carries the descriptions (a record without them reads as before), checked as the rest of it."""
    import pytest

    from resnet_cli.data.inputs import InputSpec, labelled
    from resnet_cli.errors import BadInput

    spec = InputSpec.of(["n01440764", "n01443537"], 3, 224, 256, (0.5,) * 3, (0.2,) * 3,
                        ["tench, Tinca tinca", ""])
    record = spec.as_dict()
    assert record["descriptions"] == ["tench, Tinca tinca", ""] and InputSpec.from_dict(record) == spec
    assert "descriptions" not in InputSpec.of(["a"], 1, 28, 0, (0.5,), (0.2,)).as_dict()
    assert spec.for_outputs(3).descriptions == ("tench, Tinca tinca", "", "")
    assert [labelled(c, spec.description(i)) for i, c in enumerate(spec.classes)] == ["tench (n01440764)",
                                                                                     "n01443537"]
    for bad in (["only one"], [1, 2], ["x" * 1001, ""]):
        with pytest.raises(BadInput, match="input record"):
            InputSpec.from_dict({**record, "descriptions": bad})


def test_an_image_folders_synset_words_names_what_each_class_is(tmp_path):
    from resnet_cli.data.imagefolder import descriptions

    (tmp_path / "synset_words.txt").write_text("n01440764 tench, Tinca tinca\nn09999999 another\n\nbad\n")
    assert descriptions(tmp_path, ["n01440764", "n01443537"]) == ("tench, Tinca tinca", "")
    assert descriptions(tmp_path, ["cat", "dog"]) == ()  # a file about other classes says nothing of these
    assert descriptions(tmp_path / "elsewhere", ["n01440764"]) == ("tench, Tinca tinca",)  # the shipped list


@pytest.mark.slow
def test_predict_eval_and_shards_say_what_each_imagenet_class_is(cli, tmp_path, archives, smoke_args):
    src = archives[0]
    out = tmp_path / "imagenet"
    assert cli("data", "imagenet", str(src), str(out)).exit_code == 0
    done = cli("train", *smoke_args("cpu", 9, 7, "data.dataset=imagefolder", "data.image_size=16",
                                    "data.workers=0"), "--data-dir", str(out), "--epochs", "1", "--batch-size", "3",
               "--run-dir", str(tmp_path / "runs"), "--name", "fish")
    assert done.exit_code == 0, done.output
    run, image = tmp_path / "runs" / "fish", next((out / "val" / "n01440764").iterdir())
    found = json.loads(cli("predict", str(run), str(image), "--json", "-k", "3").stdout)["predictions"][0]["top"]
    assert {t["class"]: t["description"] for t in found} == {w: WORDS[w] for w in WORDS}
    table = cli("predict", str(run), str(image), "-k", "3").stdout
    assert all(f"{WORDS[w].split(',')[0]} ({w})" in table for w in WORDS), table
    csv = cli("predict", str(run), str(image), "--csv").stdout.splitlines()
    assert csv[0] == "path,rank,class,index,probability,description"
    assert csv[1].endswith(f',"{WORDS[found[0]["class"]]}"')  # quoted: the description holds commas
    per_class = json.loads(cli("eval", str(run), "--json").stdout)["per_class"]
    assert {r["class"]: r["description"] for r in per_class} == WORDS
    assert "tench (n01440764)" in cli("eval", str(run)).stdout
    assert cli("data", "convert", str(out), str(tmp_path / "shards"), "--workers", "0").exit_code == 0
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert index["descriptions"] == [WORDS[w] for w in index["classes"]]
