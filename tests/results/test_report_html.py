"""report.html: self-contained, escaped, and rendered for real by headless Chromium."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fruits_pipeline.results.page import render_html
from fruits_pipeline.results.report import from_json

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: The line colour of the explained-variance plot (matplotlib's C0); the page's own style
#: uses no such colour, so its pixels on a screenshot come from a rendered plot.
PLOT_BLUE = (31, 119, 180)


class PageParser(HTMLParser):
    """Collects the ids, the <img> sources and every URL-bearing attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        values = dict(attrs)
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "img":
            self.images.append(values.get("src") or "")
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(values[name])


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def expected_sections(report: dict) -> set[str]:
    return {"summary", "plots", "counts", "run"} | (
        {"evaluation"} if "evaluation" in report else set()
    )


def check_images(parser: PageParser, count: int) -> None:
    """Every <img> is an embedded PNG that decodes."""
    assert len(parser.images) == count
    for source in parser.images:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            image.load()
            assert image.format == "PNG" and image.size[0] >= 700


@pytest.fixture(scope="module")
def run(small_run):
    return small_run


def test_the_page_is_self_contained(run):
    page = (run.output / "report.html").read_text(encoding="utf-8")
    report = json.loads((run.output / "report.json").read_text(encoding="utf-8"))
    parser = parse(page)
    assert expected_sections(report) <= parser.ids
    check_images(parser, 3 + ("evaluation" in report))
    assert all(url.startswith("data:") for url in parser.urls)  # nothing to fetch
    assert "script" not in parser.tags and "link" not in parser.tags
    counts = report["counts"]
    for fact in (report["run_id"], report["weights"]["arrays_sha256"], str(counts["featurized"])):
        assert fact in page
    for label in counts["per_label"]:
        assert f"<td>{label}</td>" in page


def test_labels_are_escaped_and_random_weights_are_flagged(run):
    document = copy.deepcopy(run.report)
    document["counts"]["per_label"] = {
        '<img src="x" onerror="alert(1)">': {"featurized": 2, "rejected": 0}
    }
    document["weights"].update({"source": "random:0", "kind": "random", "meaningful": False})
    page = render_html(from_json(document), {})
    parser = parse(page)
    assert parser.images == [] and "&lt;img src=&quot;x&quot;" in page
    assert "not-meaningful" in parser.ids and "NOT meaningful" in page
    assert "not-meaningful" not in parse(render_html(from_json(run.report), {})).ids


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_chromium_renders_the_page(run, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: .ci/run installs Debian's chromium package")
    page = run.output / "report.html"
    shot = tmp_path / "report.png"
    shown = chromium(
        [
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            "--enable-logging=stderr",
            "--v=0",
            page.as_uri(),
        ],
        tmp_path / "profile-shot",
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    console = [line for line in shown.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console  # no script errors, no blocked or missing resource
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (2000, 1280, 3)
    blue = np.all(np.abs(pixels.astype(int) - PLOT_BLUE) <= 3, axis=-1).sum()
    assert blue > 200, "no plot drawn in the first 2000 pixels of the page"
    shutil.copy(shot, run.output.parent / "report-screenshot.png")  # kept to look at

    dumped = chromium(["--dump-dom", page.as_uri()], tmp_path / "profile-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    report = json.loads((run.output / "report.json").read_text(encoding="utf-8"))
    parser = parse(dumped.stdout)
    assert expected_sections(report) <= parser.ids
    check_images(parser, 3 + ("evaluation" in report))
    title = re.search(r"<h1>(.*?)</h1>", dumped.stdout)
    assert title and title.group(1) == "fruits-pipeline run report"


def test_plots_and_page_go_to_s3_too(moto_endpoint, run):
    import boto3
    import s3fs

    from fruits_pipeline.results.storage import write_bytes
    from fruits_pipeline.results.writer import read_plots, update_finished

    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="fruits-report-html",
        CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
    )
    output = "s3://fruits-report-html/runs/1/output"
    for png in (run.output / "plots").iterdir():
        write_bytes(f"{output}/plots/{png.name}", png.read_bytes())
    assert set(read_plots(output)) == {p.name for p in (run.output / "plots").iterdir()}
    report = from_json(run.report)
    update_finished(output, report)
    assert report.outputs.report_html == f"{output}/report.html"
    body = boto3.client("s3").get_object(
        Bucket="fruits-report-html", Key="runs/1/output/report.html"
    )
    parser = parse(body["Body"].read().decode("utf-8"))
    check_images(parser, 3)  # run.report has no evaluation: no confusion matrix on the page
