"""The data checks once per job: shared among the processes (each decodes its share of the images
and measures its share of the records), gathered into what one process alone finds, cached by the
data's content, and a bad record stops every process before any model loads."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from mcmdpo.caching import json_sha256
from mcmdpo.data.lengths import check_lengths, measure_records, report_from
from mcmdpo.data.loading import apply_image_checks, check_images, distinct_images, find_problems, parse_records
from mcmdpo.preference.dataset import PreferenceDataset
from mcmdpo.data.records import DataValidationError
from mcmdpo.data.sft_dataset import SFTDataset
from mcmdpo.data.synthetic import write_dataset
from mcmdpo.model.loading import load_family
from mcmdpo.train.data_checks import DataChecks
from mcmdpo.train.data_fingerprints import length_settings
from mcmdpo.train.shared_work import unshard


def test_unshard_undoes_every_share():
    for total in (0, 1, 5, 48, 49):
        items = list(range(total))
        for count in (1, 2, 3, 8):
            assert unshard([items[rank::count] for rank in range(count)]) == items


@pytest.fixture
def data_with_a_bad_image(synthetic_dir, tmp_path):
    """The synthetic preference records with their images, two of them damaged (one in each
    process's share when two share them out)."""
    images = tmp_path / "image"
    shutil.copytree(synthetic_dir / "image", images)
    data = tmp_path / "pref_train.json"
    shutil.copy(synthetic_dir / "pref_train.json", data)
    records = json.loads(data.read_text())
    (images / records[3]["image"]["path"]).write_bytes(b"not an image")
    damaged = images / records[6]["image"]["path"]
    damaged.write_bytes(damaged.read_bytes()[:100])
    return data, images


@pytest.mark.parametrize("count", [2, 3])
def test_shared_image_checks_equal_one_process(data_with_a_bad_image, count):
    """Each of ``count`` processes decodes its share; put back in order, the examples, sizes and
    problems are exactly those of one process decoding everything."""
    data, images = data_with_a_bad_image
    alone, alone_problems = find_problems(data, "preference", images, show_progress=False)
    _, examples, problems = parse_records(data, "preference")
    distinct = distinct_images(examples)
    shares = [check_images(distinct[rank::count], images, show_progress=False) for rank in range(count)]
    assert sum(len(share) for share in shares) == len(distinct) and max(map(len, shares)) - min(map(len, shares)) <= 1
    valid, sizes = apply_image_checks(examples, dict(zip(distinct, unshard(shares))), data, problems)
    assert valid == alone.examples and sizes == alone.image_sizes
    assert problems == alone_problems and len(problems) == 2
    assert [p.location.number for p in problems] == [3, 6] and {p.field for p in problems} == {"image_path"}


@pytest.mark.parametrize("count", [2, 3])
def test_shared_length_checks_equal_one_process(synthetic_dir, processor, tiny_checkpoint, count):
    """MCM-DPO's eight sequences a record (other records' contexts and negative images included)
    measured in shares and put back in order: the very report of one process, drops and cuts
    included."""
    loaded = find_problems(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False)[0]
    inputs = load_family(str(tiny_checkpoint), "auto").inputs
    dataset = PreferenceDataset(loaded.examples, processor, synthetic_dir / "image", 60, inputs)
    alone = dataset.keep_what_fits(loaded.image_sizes, show_progress=False)
    assert alone.dropped and alone.truncated and alone.kept  # the comparison covers every fate
    positions = list(range(len(loaded.examples)))
    shares = [measure_records(dataset, loaded.image_sizes, positions[rank::count], show_progress=False) for rank in range(count)]
    assert report_from(loaded.examples, 60, unshard(shares)) == alone


def test_every_record_that_cannot_be_measured_is_listed(synthetic_dir, processor):
    """A record whose text holds the model's own image placeholder stops the run; every such
    record is listed (from every share), not only the first."""
    loaded = find_problems(synthetic_dir / "sft_train.json", "sft", synthetic_dir / "image", show_progress=False)[0]
    examples = list(loaded.examples[:10])
    for position in (2, 7):
        example = examples[position]
        examples[position] = type(example)(example.idx, example.image, (("look: <image>", "an answer"),), example.location)
    from mcmdpo.data.image_inputs import ImageInputs

    dataset = SFTDataset(examples, processor, None, 2048, ImageInputs())
    with pytest.raises(DataValidationError) as error:
        check_lengths(dataset, loaded.image_sizes[:10], show_progress=False)
    assert [p.location.number for p in error.value.problems] == [2, 7]
    shares = [measure_records(dataset, loaded.image_sizes[:10], positions=list(range(10))[rank::2], show_progress=False)
              for rank in range(2)]
    assert [r.location.number for r in unshard(shares) if not isinstance(r, tuple)] == [2, 7]


def test_one_process_caches_by_content(synthetic_dir, processor, tiny_checkpoint, tmp_path):
    """Without a process group: the first run checks and caches; the next reads the cache and
    decodes nothing; a changed image, data file, max_length or chat template checks again; a
    damaged cache entry is ignored; ``none`` caches nothing."""
    images = tmp_path / "image"
    shutil.copytree(synthetic_dir / "image", images)
    records = json.loads((synthetic_dir / "sft_train.json").read_text())[:12]
    data = tmp_path / "sft.json"
    data.write_text(json.dumps(records))
    inputs = load_family(str(tiny_checkpoint), "auto").inputs
    cache = tmp_path / "cache"

    def run(max_length: int = 2048, cache_dir: Path | str = cache) -> tuple[DataChecks, list]:
        checks = DataChecks(data, "sft", images, cache_dir, length_settings("sft"), show_progress=False)
        loaded = checks.load_examples()
        dataset = SFTDataset(loaded.examples, processor, images, max_length, inputs)
        report = checks.check_lengths(dataset, loaded.image_sizes, show_progress=False)
        return checks, [loaded.examples, loaded.image_sizes, report]

    first, result = run()
    assert first.decoded == [12] and first.measured == [12] and len(list(cache.glob("*.json"))) == 2
    again, same = run()
    assert again.decoded == [0] and again.measured == [0] and same == result
    assert run(max_length=1024)[0].measured == [12] and run(max_length=1024)[0].measured == [0]
    image = images / records[5]["image"]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 1_000_000))
    changed = run()[0]
    assert changed.decoded == [12] and changed.measured == [12]  # the image key changed: so did the lengths'
    data.write_text(json.dumps(records, indent=1))  # the same records, another file
    assert run()[0].decoded == [12] and run()[0].decoded == [0]
    original = processor.chat_template
    try:
        processor.chat_template = original.replace("ASSISTANT:", "ASSISTANT :")
        assert run()[0].measured == [12]
    finally:
        processor.chat_template = original
    for entry in cache.glob("*.images.json"):
        entry.write_text("{not json")
    assert run()[0].decoded == [12] and run()[0].decoded == [0]
    cached = sorted(cache.iterdir())
    assert run(cache_dir="none")[0].decoded == [12] and run(cache_dir="none")[0].decoded == [12]
    assert sorted(cache.iterdir()) == cached and not Path("none").exists()


# --- two processes of the real training entry under DeepSpeed (gloo on CPU) ---------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_on_two_processes(model: Path, data: Path, images: Path, out: Path, cache: Path) -> subprocess.CompletedProcess:
    deepspeed = Path(sys.executable).parent / "deepspeed"
    return subprocess.run(
        [str(deepspeed), "--num_gpus", "2", "--master_port", str(free_port()), "--module", "mcmdpo.train", "--stage", "sft",
         "--model_name_or_path", str(model), "--data_path", str(data), "--image_folder", str(images), "--output_dir", str(out),
         "--max_steps", "1", "--per_device_train_batch_size", "2", "--dataloader_num_workers", "0", "--report_to", "none",
         "--save_strategy", "no", "--plot", "false", "--deepspeed", str(REPO_ROOT / "scripts" / "zero2.json"), "--use_cpu", "true",
         "--data_cache_dir", str(cache)],
        cwd=REPO_ROOT, env={**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def two_process_runs(tiny_checkpoint, tmp_path_factory):
    """Two runs on 2 processes with one cache: the first checks, the second reads the cache."""
    folder = tmp_path_factory.mktemp("two_processes")
    data = write_dataset(folder / "data", seed=1, num_sft=48, num_pref_train=2, num_pref_test=1, num_test=1)
    runs = [train_on_two_processes(tiny_checkpoint, data / "sft_train.json", data / "image", folder / f"out{i}", folder / "cache")
            for i in (1, 2)]
    for run in runs:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return folder, data, runs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_each_check_half_and_agree_with_one_process(two_process_runs, processor, tiny_checkpoint):
    folder, data, (first, _) = two_process_runs
    log = first.stdout + first.stderr
    assert "data checks: 48 records, 48 images checked on 2 processes (24 + 24)" in log
    assert "data checks: 48 records' lengths measured on 2 processes (24 + 24)" in log
    assert "data checks agree on all 2 processes: 48 of 48 records kept" in log
    assert json.loads((folder / "out1" / "data_report.json").read_text())["kept"] == 48
    # Gathered from both processes, exactly what one process alone finds.
    loaded = find_problems(data / "sft_train.json", "sft", data / "image", show_progress=False)[0]
    inputs = load_family(str(tiny_checkpoint), "auto").inputs
    alone = check_lengths(SFTDataset(loaded.examples, processor, None, 2048, inputs), loaded.image_sizes, show_progress=False)
    digest = json_sha256([loaded.image_sizes, alone.kept, alone.dropped, alone.truncated, alone.image_tokens])
    assert f"(digest {digest[:12]})" in log
    assert json.loads((folder / "out1" / "data_report.json").read_text()) == alone.as_dict()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_restart_reads_the_cache_and_a_damaged_image_is_checked_again(two_process_runs, tiny_checkpoint):
    """The second run decodes and measures nothing; damaging two images (one in each process's
    share) makes the next run check them again and stop on both processes, listing both, before
    any model loads (its weights here would not load), without hanging."""
    folder, data, (_, second) = two_process_runs
    log = second.stdout + second.stderr
    assert "data checks read from cache" in log and "48 records, 48 images, 0 decoded" in log
    assert "48 records' lengths, 0 measured" in log and "checking images" not in log
    assert "data checks agree on all 2 processes: 48 of 48 records kept" in log
    records = json.loads((data / "sft_train.json").read_text())
    (data / "image" / records[1]["image"]).write_bytes(b"not an image")
    damaged = data / "image" / records[4]["image"]
    damaged.write_bytes(damaged.read_bytes()[:100])
    model = folder / "unloadable"
    shutil.copytree(tiny_checkpoint, model)
    (model / "model.safetensors").write_bytes(b"not weights")
    third = train_on_two_processes(model, data / "sft_train.json", data / "image", folder / "out3", folder / "cache")
    assert third.returncode == 2, third.stdout[-3000:] + third.stderr[-3000:]
    output = third.stdout + third.stderr
    assert "Traceback" not in output and "data report" not in output and "Loading weights" not in output
    # Every process stops; process 0 lists the problems of both shares, the other says so.
    assert third.stderr.count("error: 2 problem(s) in the input data") == 2
    assert third.stderr.count("(process 0 lists them)") == 1
    path = data / "sft_train.json"
    assert f"{path}, record 1 (idx='{records[1]['id']}'), field 'image_path': not a readable image" in third.stderr
    assert f"{path}, record 4 (idx='{records[4]['id']}'), field 'image_path': image cannot be fully decoded" in third.stderr
    assert not (folder / "out3" / "data_report.json").exists()
