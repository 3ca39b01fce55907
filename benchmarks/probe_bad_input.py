"""Bad configs and bad inputs, as a user would make them, through the real entry points.

    uv run python benchmarks/probe_bad_input.py            # about two minutes on 2 cores

Each bad config is run with ``snakemake -n`` (nothing may be planned or written, and the message
must name the offending key); each bad input through the stage that reads it (the dataset rule
on a folder of images or a local copy of MNIST, or the ``cbir`` command line), which must fail
with a message naming the file, leave no output under its final name and no temporary file.
Prints one row per case — rejected (a config: before any job is planned; an input: by the stage
that reads it, or by the command line without a traceback), names the key or file, nothing
half-written — and exits 1 if any row fails.
"""

from __future__ import annotations

import copy
import gzip
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "config.yaml").read_text())
sys.path.insert(0, str(REPO / "src"))


def setting(path: str, value):
    def mutate(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def deleting(path: str):
    def mutate(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


# (case, change to config.yaml, the key the message must name)
BAD_CONFIGS = [
    ("misspelt top-level key", setting("sede", [0]), "sede"),
    ("the old single seed key", setting("seed", 0), "seed"),
    ("seeds not a list", setting("seeds", "zero"), "seeds"),
    ("negative seed", setting("seeds", [0, -1]), "seeds"),
    ("repeated seed", setting("seeds", [1, 1]), "seeds"),
    ("no seeds", setting("seeds", []), "seeds"),
    ("empty results_dir", setting("results_dir", ""), "results_dir"),
    ("report_dir at the root", setting("report_dir", "/"), "report_dir"),
    ("no datasets", setting("datasets", {}), "datasets"),
    ("unknown dataset kind", setting("datasets.digits.kind", "imagenet"), "datasets.digits.kind"),
    ("missing protocol", deleting("datasets.digits.protocol"), "datasets.digits.protocol"),
    ("undefined protocol", setting("datasets.digits.protocol", "paper-mnist"), "datasets.digits.protocol"),
    ("undefined hashing backbone", setting("datasets.digits.hashing", ["resnet50"]), "datasets.digits.hashing"),
    ("undefined metric backbone", setting("datasets.digits.metric_learning", ["alexnet"]), "datasets.digits.metric_learning"),
    ("local copy that does not exist", setting("datasets.digits.root", "/no/such/folder"), "datasets.digits.root"),
    ("image folder without a root", setting("datasets.digits.kind", "imagefolder"), "datasets.digits.root"),
    ("unsafe dataset name", lambda c: c["datasets"].update({"my data/set": c["datasets"]["digits"]}), "datasets"),
    ("misspelt dataset key", setting("datasets.digits.protocl", "digits"), "datasets.digits.protocl"),
    ("zero queries per class", setting("protocols.digits.query_per_class", 0), "protocols.digits.query_per_class"),
    ("database size a word", setting("protocols.digits.database_per_class", "most"), "protocols.digits.database_per_class"),
    ("unknown size form", setting("protocols.digits.query_per_class", {"at_most": 3}), "protocols.digits.query_per_class"),
    ("option of another protocol kind", setting("protocols.digits", {"kind": "holidays", "query_per_class": 5}), "protocols.digits.query_per_class"),
    ("holidays protocol on digits", setting("protocols.digits", {"kind": "holidays"}), "datasets.digits.protocol"),
    ("unknown arch", setting("backbones.smallcnn.arch", "vgg16"), "backbones.smallcnn.arch"),
    ("imagenet weights for the small CNN", setting("backbones.smallcnn.weights", "imagenet"), "backbones.smallcnn.weights"),
    ("fc6 outside alexnet", setting("backbones.smallcnn.feature_layer", "fc6"), "backbones.smallcnn.feature_layer"),
    ("input size too small", setting("backbones.smallcnn.input_size", 2), "backbones.smallcnn.input_size"),
    ("zero threads", setting("backbones.smallcnn.threads", 0), "backbones.smallcnn.threads"),
    ("non-positive learning rate", setting("backbones.smallcnn.finetune.lr", 0), "backbones.smallcnn.finetune.lr"),
    ("negative epochs", setting("backbones.smallcnn.finetune.epochs", -1), "backbones.smallcnn.finetune.epochs"),
    ("unknown schedule", setting("backbones.smallcnn.finetune.schedule", "linear"), "backbones.smallcnn.finetune.schedule"),
    ("unknown device", setting("backbones.smallcnn.finetune.device", "tpu"), "backbones.smallcnn.finetune.device"),
    ("validation fraction above a half", setting("backbones.smallcnn.finetune.validation_fraction", 0.9), "backbones.smallcnn.finetune.validation_fraction"),
    ("misspelt finetune key", setting("backbones.smallcnn.finetune.lrate", 0.1), "backbones.smallcnn.finetune.lrate"),
    ("bits above 64", setting("hashing.bits", [12, 128]), "hashing.bits"),
    ("duplicate bit lengths", setting("hashing.bits", [12, 12]), "hashing.bits"),
    ("unknown hashing method", setting("hashing.methods", ["ba", "kmeans"]), "hashing.methods"),
    ("unknown preprocessing", setting("hashing.preprocess", "zscore"), "hashing.preprocess"),
    ("zero training sample", setting("hashing.train_sample", 0), "hashing.train_sample"),
    ("misspelt BA option", setting("hashing.ba.mu_scedule", [1.0]), "hashing.ba.mu_scedule"),
    ("BA mu schedule without count", setting("hashing.ba.mu_schedule", {"start": 1e-5, "factor": 2}), "hashing.ba.mu_schedule"),
    ("BA exact Z step above 20 bits", setting("hashing.ba.exact_max_bits", 32), "hashing.ba.exact_max_bits"),
    ("negative SSDH weight", setting("hashing.ssdh.alpha", -1), "hashing.ssdh.alpha"),
    ("SSDH recipe key that fine-tuning lacks", setting("hashing.ssdh.finetune", {"epocs": 2}), "hashing.ssdh.finetune"),
    ("unknown metric-learning model", setting("metric_learning.models", ["PT", "XX"]), "metric_learning.models"),
    ("zero metric-learning batch", setting("metric_learning.batch_size", 0), "metric_learning.batch_size"),
    ("top-k of zero", setting("evaluation.topk", 0), "evaluation.topk"),
    ("zero neighbours", setting("evaluation.neighbours", 0), "evaluation.neighbours"),
]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args], workdir)


def leftovers(root: Path) -> list[str]:
    """Temporary files of the atomic writer left behind."""
    return [str(p) for p in root.rglob(".*.tmp")]


def probe_config(name, mutate, key, scratch: Path) -> dict:
    """config.yaml changed by ``mutate``."""
    config = copy.deepcopy(BASE)
    mutate(config)
    return probe_config_text(name, yaml.safe_dump(config), key, scratch)


def probe_config_text(name, text_config: str, key: str, scratch: Path) -> dict:
    """A config file with this text, planned with ``snakemake -n``."""
    workdir = scratch / "config"
    workdir.mkdir(exist_ok=True)
    path = workdir / "bad.yaml"
    path.write_text(text_config)
    result = snakemake(workdir, "-n", "--cores", "1", "--configfile", str(path))
    text = result.stdout + result.stderr
    return {
        "kind": "config",
        "case": name,
        "rejected": result.returncode != 0 and "Job stats" not in text,
        "names the key or file": f"'{key}" in text or f"{key}" in text.split("invalid configuration", 1)[-1],
        "nothing half-written": not (workdir / "results").exists() and not (workdir / "resources").exists(),
    }


# ------------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------------


def image_folder(root: Path) -> None:
    """A small valid folder of images: two classes of six."""
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")


def folder_config(root: Path) -> dict:
    return {
        "seeds": [0],
        "report_dir": "results/report/probe",
        "datasets": {"photos": {"kind": "imagefolder", "root": str(root), "protocol": "p", "hashing": ["smallcnn"], "metric_learning": []}},
        "protocols": {"p": {"kind": "per_class", "database_per_class": 4, "query_per_class": 1, "train_per_class": "database"}},
        "backbones": BASE["backbones"],
        "hashing": {"methods": ["itq"], "bits": [12]},
    }


def break_truncated_jpeg(root):
    data = (root / "cats/0.jpg").read_bytes()
    (root / "cats/0.jpg").write_bytes(data[: len(data) // 2])
    return "cats/0.jpg"


def break_empty_file(root):
    (root / "cats/1.jpg").write_bytes(b"")
    return "cats/1.jpg"


def break_text_as_image(root):
    (root / "dogs/2.jpg").write_text("not an image")
    return "dogs/2.jpg"


def break_png_header_only(root):
    (root / "dogs/3.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return "dogs/3.png"


def break_dangling_image_link(root):
    os.symlink(root / "nowhere.jpg", root / "cats/linked.jpg")
    return "cats/linked.jpg"


def break_dangling_class_link(root):
    os.symlink(root / "no-such-class", root / "birds")
    return "birds"


def break_non_utf8_name(root):
    name = b"caf\xe9.jpg"
    data = (root / "cats/2.jpg").read_bytes()
    with open(os.path.join(os.fsencode(root / "cats"), name), "wb") as f:
        f.write(data)
    return "caf\\xe9.jpg"


def break_gif_as_jpeg(root):
    (root / "dogs/4.jpg").write_bytes(b"GIF89a" + b"\x00" * 10)
    return "dogs/4.jpg"


def break_jpeg_garbage_tail(root):
    data = (root / "dogs/5.jpg").read_bytes()
    (root / "dogs/5.jpg").write_bytes(data[:200] + os.urandom(64))
    return "dogs/5.jpg"


def break_class_too_small(root):
    for i in range(3, 6):
        (root / "dogs" / f"{i}.jpg").unlink()
    return "protocols.p.database_per_class"


FOLDER_CASES = [
    ("truncated JPEG", break_truncated_jpeg),
    ("empty image file", break_empty_file),
    ("text file named .jpg", break_text_as_image),
    ("PNG with only its signature", break_png_header_only),
    ("GIF bytes named .jpg", break_gif_as_jpeg),
    ("JPEG with a garbage tail", break_jpeg_garbage_tail),
    ("dangling symlink to an image", break_dangling_image_link),
    ("dangling symlink as a class folder", break_dangling_class_link),
    ("file name that is not UTF-8", break_non_utf8_name),
    ("class with fewer images than the split asks", break_class_too_small),
]


def idx_images(n: int) -> bytes:
    return struct.pack(">IIII", 2051, n, 28, 28) + bytes(n * 28 * 28)


def idx_labels(n: int) -> bytes:
    return struct.pack(">II", 2049, n) + bytes(n)


def mnist_copy(root: Path) -> None:
    raw = root / "MNIST/raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60), ("t10k", 20)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_images(n))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_labels(n))


def mnist_missing(raw):
    (raw / "t10k-labels-idx1-ubyte").unlink()
    return "t10k-labels-idx1-ubyte"


def mnist_truncated(raw):
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[:1000])
    return "train-images-idx3-ubyte"


def mnist_bad_magic(raw):
    data = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    data[:4] = struct.pack(">I", 1234)
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(data))
    return "train-labels-idx1-ubyte"


def mnist_count_mismatch(raw):
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_labels(19))
    return "t10k"


def mnist_bad_gzip(raw):
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_images(60))[:50])
    return "train-images-idx3-ubyte.gz"


MNIST_CASES = [
    ("MNIST file missing", mnist_missing),
    ("MNIST images truncated", mnist_truncated),
    ("MNIST labels with a wrong magic number", mnist_bad_magic),
    ("MNIST images and labels of different counts", mnist_count_mismatch),
    ("MNIST .gz file cut short", mnist_bad_gzip),
]


def probe_dataset(name, kind, prepare, breaker, scratch: Path) -> dict:
    workdir = scratch / name.replace(" ", "_")
    data = workdir / "data"
    data.mkdir(parents=True)
    prepare(data)
    target = breaker(data / "MNIST/raw" if kind == "mnist" else data)
    config = folder_config(data)
    if kind == "mnist":
        config["datasets"] = {"photos": {**config["datasets"]["photos"], "kind": "mnist"}}
        config["protocols"]["p"].update(database_per_class=1, query_per_class=1)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # A file is named by the dataset stage; a split size that a class cannot meet, by the split stage.
    stage = "splits" if target.startswith("protocols") else "dataset"
    output = "results/photos/seed0/splits/p.parquet" if stage == "splits" else "resources/datasets/photos/manifest.parquet"
    result = snakemake(workdir, output, "--cores", "1", "--configfile", str(path))  # --configfile takes several values: last
    text = result.stdout + result.stderr
    for log in workdir.glob("results/logs/**/*.log"):
        text += log.read_text(errors="replace")
    written = (workdir / output).exists()
    return {
        "kind": "input",
        "case": name,
        "rejected": result.returncode != 0,
        "names the key or file": target in text,
        "nothing half-written": not written and not leftovers(workdir),
    }


def probe_cli(name, args, expected, scratch: Path, prepare=None) -> dict:
    workdir = scratch / ("cli_" + name.replace(" ", "_"))
    workdir.mkdir()
    if prepare:
        prepare(workdir)
    before = {p for p in workdir.rglob("*")}
    result = run([sys.executable, "-m", "cbir.cli", "--configfile", str(REPO / "config.yaml"), *args], workdir)
    text = result.stdout + result.stderr
    return {
        "kind": "input",
        "case": name,
        "rejected": result.returncode != 0 and "Traceback" not in text,
        "names the key or file": expected in text,
        "nothing half-written": {p for p in workdir.rglob("*")} == before,
    }


def cli_cases(scratch):
    def existing_output(workdir):
        (workdir / "hits.csv").write_text("keep me")
        Image.new("L", (8, 8)).save(workdir / "q.png")

    def query(workdir):
        Image.new("L", (8, 8)).save(workdir / "q.png")

    return [
        ("CLI: unknown dataset", ["search", "q.png", "--dataset", "nope"], "nope", query),
        ("CLI: unknown model", ["search", "q.png", "--model", "hashing/smallcnn/kmeans/12"], "kmeans", query),
        ("CLI: seed the config does not have", ["search", "q.png", "--seed", "7"], "seed 7", query),
        ("CLI: zero results asked for", ["search", "q.png", "-k", "0"], "-k", query),
        ("CLI: output into a missing folder", ["search", "q.png", "-o", "no/such/dir/hits.csv"], "no/such/dir", query),
        ("CLI: output over an existing file", ["search", "q.png", "-o", "hits.csv"], "hits.csv", existing_output),
        ("CLI: index never built", ["search", "q.png"], "results/digits/seed0", query),
    ]


class Payload:
    """Unpickling this touches ``marker``: the code a crafted index file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def probe_pickled_index(scratch: Path) -> dict:
    """A received hash model whose array file is a crafted pickle, loaded as ``cbir search`` does."""
    import pickle

    from cbir.hashing import ITQ, load_hasher, save_hasher

    folder = scratch / "received_index"
    folder.mkdir()
    model = folder / "model.npz"
    save_hasher(ITQ(8, random_state=0).fit(np.random.default_rng(0).normal(size=(50, 16))), model)
    marker = folder / "payload-ran"
    model.write_bytes(pickle.dumps(Payload(marker)))
    try:
        load_hasher(model)
        refused, message = False, ""
    except ValueError as err:
        refused, message = True, str(err)
    return {"kind": "input", "case": "a crafted pickle as a received index", "rejected": refused, "names the key or file": str(model) in message, "nothing half-written": not marker.exists()}


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="cbir-probe-") as tmp:
        scratch = Path(tmp)
        for name, mutate, key in BAD_CONFIGS:
            rows.append(probe_config(name, mutate, key, scratch))
            print(f"  {rows[-1]['case']}", file=sys.stderr)
        rows.append(probe_config_text("key given twice", "seeds: [0]\nseeds: [1]\n", "seeds", scratch))
        for name, breaker in FOLDER_CASES:
            rows.append(probe_dataset(name, "imagefolder", image_folder, breaker, scratch))
            print(f"  {rows[-1]['case']}", file=sys.stderr)
        for name, breaker in MNIST_CASES:
            rows.append(probe_dataset(name, "mnist", mnist_copy, breaker, scratch))
            print(f"  {rows[-1]['case']}", file=sys.stderr)
        rows.append(probe_pickled_index(scratch))
        for name, args, expected, prepare in cli_cases(scratch):
            rows.append(probe_cli(name, args, expected, scratch, prepare))
            print(f"  {rows[-1]['case']}", file=sys.stderr)

    checks = ["rejected", "names the key or file", "nothing half-written"]
    print("| kind | case | " + " | ".join(checks) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in checks) + " |")
    for row in rows:
        print(f"| {row['kind']} | {row['case']} | " + " | ".join("yes" if row[c] else "**NO**" for c in checks) + " |")
    failed = [row["case"] for row in rows if not all(row[c] for c in checks)]
    n_config = sum(r["kind"] == "config" for r in rows)
    print(f"\n{n_config} bad configs, {len(rows) - n_config} bad inputs; {len(rows) - len(failed)} of {len(rows)} rows pass" + (f"; failing: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
