"""Downloads from a local stand-in for the Hugging Face Hub: choice of file, resume, checksum, safety."""

import time
from pathlib import Path

import pytest

from lmdock.core.errors import DownloadFailed, InsufficientStorage, InvalidRequest, ModelNotFound
from lmdock.models.download_jobs import DownloadJobs
from lmdock.models.downloads import download_file, parse_spec, plan_download, target_path
from tests.hf_fixture import FakeHub, write_gguf
from tests.small_disk import fill, small_disk


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("gguf")
    return {
        "big": write_gguf(tmp / "big.gguf", pad_floats=200_000).read_bytes(),
        "small": write_gguf(tmp / "small.gguf").read_bytes(),
    }


@pytest.fixture
def hub(files):
    hub = FakeHub()
    hub.add("acme/Tiny-GGUF", "tiny-Q8_0.gguf", files["small"])
    hub.add("acme/Tiny-GGUF", "tiny-Q4_K_M.gguf", files["big"])
    hub.add("acme/Tiny-GGUF", "mmproj-tiny-f16.gguf", files["small"])
    hub.add("acme/Bad-GGUF", "bad-Q4_K_M.gguf", files["big"], corrupt=True)
    yield hub.start()
    hub.stop()


@pytest.mark.parametrize(
    ("text", "repo", "filename", "quant"),
    [
        ("acme/Tiny-GGUF", "acme/Tiny-GGUF", None, None),
        ("acme/Tiny-GGUF@Q8_0", "acme/Tiny-GGUF", None, "Q8_0"),
        ("acme/Tiny-GGUF/sub/x.gguf", "acme/Tiny-GGUF", "sub/x.gguf", None),
        ("https://huggingface.co/acme/Tiny-GGUF/blob/main/x.gguf", "acme/Tiny-GGUF", "x.gguf", None),
    ],
)
def test_specs(text, repo, filename, quant):
    spec = parse_spec(text)
    assert (spec.repo_id, spec.filename, spec.quantization) == (repo, filename, quant)


@pytest.mark.parametrize(
    "text",
    ["../../etc/passwd", "/etc/passwd", "acme/Tiny-GGUF/../../../x.gguf", "acme/..", "acme/r/notes.txt", "["],
)
def test_path_like_specs_are_refused(text):
    with pytest.raises(InvalidRequest):
        parse_spec(text)


def test_targets_stay_inside_the_store(tmp_path: Path):
    with pytest.raises(InvalidRequest):
        target_path(tmp_path, "..", "x.gguf")
    assert target_path(tmp_path, "acme/r", "a/x.gguf") == tmp_path.resolve() / "acme/r/a/x.gguf"


def test_repo_download_picks_q4_k_m_and_the_projector(hub, files, tmp_path: Path):
    planned = plan_download(parse_spec("acme/Tiny-GGUF"), endpoint=hub.url)
    assert [f.filename for f in planned] == ["tiny-Q4_K_M.gguf", "mmproj-tiny-f16.gguf"]
    assert [f.filename for f in plan_download(parse_spec("acme/Tiny-GGUF@q8_0"), endpoint=hub.url)][0] == (
        "tiny-Q8_0.gguf"
    )
    path = download_file(planned[0], tmp_path, endpoint=hub.url)
    assert path.read_bytes() == files["big"]
    with pytest.raises(ModelNotFound, match="no IQ2_XS file"):
        plan_download(parse_spec("acme/Tiny-GGUF@IQ2_XS"), endpoint=hub.url)
    with pytest.raises(ModelNotFound, match="not found"):
        plan_download(parse_spec("acme/Missing-GGUF"), endpoint=hub.url)


def test_a_partial_download_resumes_with_a_range_request(hub, files, tmp_path: Path):
    remote = plan_download(parse_spec("acme/Tiny-GGUF/tiny-Q4_K_M.gguf"), endpoint=hub.url)[0]
    target = target_path(tmp_path, remote.repo_id, remote.filename)
    target.parent.mkdir(parents=True)
    sha = hub.repos["acme/Tiny-GGUF"]["tiny-Q4_K_M.gguf"].sha256
    partial = target.with_name(f"{target.name}.{sha[:16]}.partial")
    partial.write_bytes(files["big"][:300_000])
    resumed, fresh = [], []
    download_file(remote, tmp_path, endpoint=hub.url, progress=fresh.append, resumed=resumed.append)
    assert target.read_bytes() == files["big"] and not partial.exists()
    assert resumed == [300_000] and sum(fresh) == len(files["big"]) - 300_000
    assert hub.ranged_gets("tiny-Q4_K_M.gguf") == ["bytes=300000-"]


def test_a_corrupt_transfer_leaves_nothing_in_the_store(hub, tmp_path: Path):
    remote = plan_download(parse_spec("acme/Bad-GGUF"), endpoint=hub.url)[0]
    with pytest.raises(DownloadFailed, match="corrupt"):
        download_file(remote, tmp_path, endpoint=hub.url)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_jobs_report_progress_and_completion(hub, files, tmp_path: Path):
    jobs = DownloadJobs(endpoint=hub.url)
    job = jobs.start(plan_download(parse_spec("acme/Tiny-GGUF"), endpoint=hub.url), tmp_path)
    deadline = time.monotonic() + 30
    while job.status == "downloading" and time.monotonic() < deadline:
        time.sleep(0.05)
    state = jobs.get(job.job_id).to_dict()
    assert state["status"] == "completed", state
    assert state["downloaded_bytes"] == state["total_size_bytes"] == len(files["big"]) + len(files["small"])
    assert state["model"] == "tiny" and state["completed_at"]
    again = jobs.start(plan_download(parse_spec("acme/Tiny-GGUF"), endpoint=hub.url), tmp_path)
    assert again.status == "already_downloaded"
    with pytest.raises(ModelNotFound):
        jobs.get("job_nope")


def test_a_download_that_does_not_fit_is_refused_before_its_first_byte(hub, files, tmp_path: Path):
    remote = plan_download(parse_spec("acme/Tiny-GGUF/tiny-Q4_K_M.gguf"), endpoint=hub.url)[0]
    with small_disk(tmp_path / "disk", 2) as disk:
        fill(disk, leave=len(files["big"]) // 2)
        with pytest.raises(InsufficientStorage, match="not enough disk space to download tiny-Q4_K_M.gguf"):
            download_file(remote, disk / "models", endpoint=hub.url)
        assert not [p for p in (disk / "models").rglob("*") if p.is_file()]


def test_a_disk_that_fills_during_a_download_gets_its_space_back(hub, files, tmp_path: Path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)  # several writes
    remote = plan_download(parse_spec("acme/Tiny-GGUF/tiny-Q4_K_M.gguf"), endpoint=hub.url)[0]
    with small_disk(tmp_path / "disk", 8) as disk:
        filled: list[Path] = []

        def something_else_fills_the_disk(n: int) -> None:
            if not filled:
                filled.append(fill(disk))

        with pytest.raises(InsufficientStorage, match="partial file was removed"):
            download_file(remote, disk / "models", endpoint=hub.url, progress=something_else_fills_the_disk)
        assert not [p for p in (disk / "models").rglob("*") if p.is_file()]
        filled[0].unlink()
        path = download_file(remote, disk / "models", endpoint=hub.url)  # space is back: it works
        assert path.read_bytes() == files["big"]
