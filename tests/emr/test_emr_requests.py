"""The EMR kit without a server: the cluster configuration against botocore's own EMR
model, and the submitter's pure request builders, code bundle, guards and argument
handling."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import botocore.session
import pytest
from botocore.validate import ParamValidator

from fruits_pipeline.emr import (
    bundle,
    cli,
    errors,
    guards,
    options,
    requests,
    s3paths,
    targets,
    watch,
)
from fruits_pipeline.results import layout

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
SUBMITTER = ROOT / "scripts" / "submit_step.py"

BASE = ["--bucket", "fruits-eu", "--input", "s3://fruits-eu/data/Test/", "--run-id", "r1"]
#: The job's weights: a file on S3, as the cluster has no internet.
JOB = ["--", "--weights", "s3://models-eu/w.h5"]


def pins() -> dict[str, str]:
    """Return pyproject.toml's [project] dependencies as {requirement line: name}."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    return {line: line.split("==")[0].strip() for line in dependencies}


def emr_input_shape(operation: str):
    return botocore.session.get_session().get_service_model("emr").operation_model(operation)


def validate(operation: str, params: dict) -> None:
    """Raise botocore's ParamValidationError when ``params`` do not fit ``operation``."""
    report = ParamValidator().validate(params, emr_input_shape(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def plan_for(tmp_path, argv: list[str], kit: bundle.KitFiles | None = None):
    parsed = options.parse_options(argv if "--" in argv else [*argv, *JOB])
    kit = kit or bundle.KitFiles.find()
    target = targets.target_for(parsed, kit)
    return parsed, requests.make_plan(parsed, kit, tmp_path, target)


# --------------------------------------------------------------------------- cluster config


def test_cluster_config_is_a_valid_run_job_flow_request(tmp_path):
    argv = [*BASE, "--create", "--subnet-id", "subnet-0abc", "--spot-task-nodes", "2"]
    argv += ["--security-configuration", "fruits-sse-kms", "--spot-core"]
    _, plan = plan_for(tmp_path, argv)
    body = plan.job.submit.params
    assert plan.job.submit.operation == "RunJobFlow"
    validate("RunJobFlow", body)  # botocore's own EMR service model
    assert "${" not in json.dumps(body)
    assert not [key for key in body if key.startswith("x-")]

    assert body["ReleaseLabel"].startswith("emr-7.")
    assert [a["Name"] for a in body["Applications"]] == ["Hadoop", "Spark"]
    groups = {g["InstanceRole"]: g for g in body["Instances"]["InstanceGroups"]}
    assert groups["MASTER"]["InstanceCount"] == 1
    assert groups["CORE"]["InstanceCount"] == 2 and groups["CORE"]["Market"] == "SPOT"
    assert groups["TASK"] == {**groups["TASK"], "Market": "SPOT", "InstanceCount": 2}
    assert {g["InstanceType"] for g in groups.values()} == {"m5.xlarge"}
    assert body["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert body["Instances"]["Ec2SubnetId"] == "subnet-0abc"
    assert body["SecurityConfiguration"] == "fruits-sse-kms"
    assert body["AutoTerminationPolicy"]["IdleTimeout"] >= 60
    assert body["LogUri"] == "s3://fruits-eu/fruits-pipeline/runs/r1/logs/"
    assert body["Steps"] == [plan.job.step]
    action = body["BootstrapActions"][0]["ScriptBootstrapAction"]
    digest = plan.wheelhouse.lock.digest
    assert action == {
        "Path": "s3://fruits-eu/fruits-pipeline/runs/r1/code/bootstrap-emr.sh",
        "Args": [
            "s3://fruits-eu/fruits-pipeline/runs/r1/code/",
            f"s3://fruits-eu/fruits-pipeline/wheelhouse/{digest}/",
        ],
    }
    assert {"Key": "run-id", "Value": "r1"} in body["Tags"]
    # AmazonEMRServicePolicy_v2 acts only on what carries this tag
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in body["Tags"]
    # what the bootstrap installs (about 2 GB, docs/emr.md) fits beside EMR's own software
    assert body["EbsRootVolumeSize"] >= 30


def test_optional_parts_are_dropped_when_not_asked_for(tmp_path):
    _, plan = plan_for(tmp_path, [*BASE, "--create"])
    body = plan.job.submit.params
    validate("RunJobFlow", body)
    assert "Ec2SubnetId" not in body["Instances"]
    assert "SecurityConfiguration" not in body
    roles = [g["InstanceRole"] for g in body["Instances"]["InstanceGroups"]]
    assert roles == ["MASTER", "CORE"]  # no Spot task group of 0 nodes
    assert body["Instances"]["InstanceGroups"][1]["Market"] == "ON_DEMAND"
    assert body["ServiceRole"] == "EMR_DefaultRole"
    assert body["JobFlowRole"] == "EMR_EC2_DefaultRole"


def test_spark_settings_suit_the_job():
    template = requests.load_cluster_template(bundle.KitFiles.find().cluster_config)
    by_class = {c["Classification"]: c for c in template["Configurations"]}
    exports = by_class["spark-env"]["Configurations"][0]
    assert exports["Classification"] == "export"
    assert exports["Properties"]["PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    defaults = by_class["spark-defaults"]["Properties"]
    assert defaults["spark.python.worker.reuse"] == "true"
    assert int(defaults["spark.sql.execution.arrow.maxRecordsPerBatch"]) > 0
    assert int(defaults["spark.executor.cores"]) % int(defaults["spark.task.cpus"]) == 0

    # YARN on m5.xlarge offers about 12 GiB a node: the driver and one executor must fit
    # on one node, with the Python workers' memory (outside the JVM) in the overheads: each
    # of an executor's concurrent tasks has a Python worker, sized for the hungriest engine.
    def mib(name: str) -> int:
        value = defaults[name]
        return int(value[:-1]) * {"m": 1, "g": 1024}[value[-1]]

    from fruits_pipeline import engines

    workers = int(defaults["spark.executor.cores"]) // int(defaults["spark.task.cpus"])
    hungriest = max(engine.worker_memory_mb for engine in engines.ENGINES.values())
    assert mib("spark.executor.memoryOverhead") >= workers * hungriest
    executor = mib("spark.executor.memory") + mib("spark.executor.memoryOverhead")
    driver = mib("spark.driver.memory") + mib("spark.driver.memoryOverhead")
    assert driver + executor <= 12 * 1024
    assert defaults["spark.pyspark.python"] == "/usr/bin/python3.11"
    assert all(isinstance(v, str) for v in defaults.values())  # EMR wants strings


def test_cluster_config_matches_the_project_pins():
    """The release's Spark is the PySpark the project pins; the region is the default one."""
    template = requests.load_cluster_template(bundle.KitFiles.find().cluster_config)
    pyspark_pin = next(line for line in pins() if line.startswith("pyspark==")).split("==")[1]
    assert template["x-spark-version"].split("-")[0] == pyspark_pin
    assert template["x-region"] == options.DEFAULT_REGION == "eu-west-1"


def test_fill_placeholders():
    fill = requests.fill_placeholders
    node = {"a": "${N}", "b": "x-${S}-y", "c": ["${GONE}", "${S}"], "d": "${GONE}", "e": 3}
    assert fill(node, {"N": 2, "S": "s", "GONE": None}) == {
        "a": 2,
        "b": "x-s-y",
        "c": ["s"],
        "e": 3,
    }
    with pytest.raises(KeyError):
        fill({"a": "${MISSING}"}, {})


# --------------------------------------------------------------------------- the step


def test_step_arguments(tmp_path):
    argv = [*BASE, "--create", "--", "--weights", "s3://models-eu/w.h5", "--limit", "50"]
    _, plan = plan_for(tmp_path, argv)
    code = "s3://fruits-eu/fruits-pipeline/runs/r1/code/"
    assert plan.job.step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    assert plan.job.step["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert plan.job.step["HadoopJarStep"]["Args"] == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--conf",
        "spark.yarn.maxAppAttempts=1",
        "--py-files",
        code + "fruits_pipeline.zip",
        code + "spark_job.py",
        "run",
        "--input",
        "s3://fruits-eu/data/Test/",
        "--output",
        "s3://fruits-eu/fruits-pipeline/runs/r1/output/",
        "--weights",
        "s3://models-eu/w.h5",
        "--limit",
        "50",
    ]


def test_step_on_a_running_cluster(tmp_path):
    _, plan = plan_for(tmp_path, [*BASE, "--cluster-id", "j-2AB3CD"])
    assert plan.job.submit.operation == "AddJobFlowSteps"
    validate("AddJobFlowSteps", plan.job.submit.params)
    assert plan.job.submit.params["JobFlowId"] == "j-2AB3CD"
    assert plan.job.step["ActionOnFailure"] == "CONTINUE"  # never end someone else's cluster


def test_layout_with_and_without_prefix(tmp_path):
    _, plan = plan_for(tmp_path, [*BASE, "--prefix", "/team/fruits/", "--create"])
    assert [u["Key"] for u in plan.uploads] == [
        "team/fruits/runs/r1/code/fruits_pipeline.zip",
        "team/fruits/runs/r1/code/spark_job.py",
        "team/fruits/runs/r1/code/bootstrap-emr.sh",
        "team/fruits/runs/r1/code/requirements.txt",
    ]
    # no encryption header: the bucket's default encryption applies
    assert not [u for u in plan.uploads if "ServerSideEncryption" in u or "SSEKMSKeyId" in u]
    _, plan = plan_for(tmp_path, [*BASE, "--prefix", "", "--create"])
    assert plan.layout.output == "s3://fruits-eu/runs/r1/output/"
    assert options.make_run_id(datetime(2025, 1, 31, 14, 25, 1, tzinfo=UTC), "a1b2c3") == (
        "20250131-142501-a1b2c3"
    )


def test_kms_uploads(tmp_path):
    _, plan = plan_for(tmp_path, [*BASE, "--create", "--kms-key-id", "alias/fruits"])
    assert {(u["ServerSideEncryption"], u["SSEKMSKeyId"]) for u in plan.uploads} == {
        ("aws:kms", "alias/fruits")
    }


# --------------------------------------------------------------------------- the code


def test_requirements_are_the_pins_minus_pyspark():
    text = bundle.requirements_text(ROOT / "pyproject.toml")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    expected = [line for line, name in pins().items() if name != "pyspark"]
    assert lines == expected
    assert all("==" in line for line in lines)  # exact pins only
    assert any(line.startswith("tensorflow-cpu==") and "x86_64" in line for line in lines)


def test_py_files_zip_is_complete_deterministic_and_importable(tmp_path):
    """Every file of the package but the submitter's and the benchmark's."""
    package = ROOT / "src" / "fruits_pipeline"
    first = bundle.build_py_files_zip(package, tmp_path / "a.zip")
    second = bundle.build_py_files_zip(package, tmp_path / "b.zip")
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    expected = sorted(
        f"fruits_pipeline/{p.relative_to(package).as_posix()}"
        for p in package.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix != ".pyc"
        and p.relative_to(package).parts[0] not in ("emr", "bench")
    )
    assert names == expected and "fruits_pipeline/cli.py" in names
    # Without site-packages (-S): the package comes from the zip alone, without the
    # submitter.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import fruits_pipeline.cli as c; "
        "assert c.__file__.startswith(sys.argv[1]), c.__file__; print(c.PROG)\n"
        "try:\n import fruits_pipeline.emr\nexcept ModuleNotFoundError:\n print('no emr')"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(first)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fruits-pipeline", "no", "emr"]


def test_py_files_zip_leaves_out_the_submitter_and_the_benchmark(tmp_path):
    package = ROOT / "src" / "fruits_pipeline"
    assert (package / "emr" / "cli.py").is_file() and (package / "bench").is_dir()
    names = zipfile.ZipFile(bundle.build_py_files_zip(package, tmp_path / "a.zip")).namelist()
    assert not [
        n for n in names if n.startswith(("fruits_pipeline/emr/", "fruits_pipeline/bench/"))
    ]
    # the job's own modules never need them
    for name in names:
        text = zipfile.ZipFile(tmp_path / "a.zip").read(name).decode("utf-8", "replace")
        assert "fruits_pipeline.emr" not in text and "fruits_pipeline.bench" not in text, name


def fake_kit(root: Path, changes: dict | None = None) -> bundle.KitFiles:
    """Write a kit laid out like the checkout under ``root``, with files of its own (its
    cluster configuration with ``changes``; the checkout's locks)."""
    files = {
        "src/fruits_pipeline/__init__.py": "",
        "src/fruits_pipeline/cli.py": "PROG = 'fake'\n",
        "src/fruits_pipeline/chain/step.py": "STEP = 1\n",
        "src/fruits_pipeline/emr/cli.py": "SUBMITTER = 1\n",
        "src/fruits_pipeline/bench/benchmark.py": "BENCH = 1\n",
        "scripts/spark_job.py": "print('fake entry')\n",
        "bootstrap/bootstrap-emr.sh": "#!/usr/bin/env bash\necho fake\n",
        "pyproject.toml": '[project]\ndependencies = ["pyspark==3.5.6", "numpy==1.0.1"]\n',
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    template = json.loads((ROOT / "emr" / "cluster-config.json").read_text())
    (root / "emr" / "lock").mkdir(parents=True)
    (root / "emr" / "cluster-config.json").write_text(
        json.dumps({**template, "ReleaseLabel": "emr-7.99.0", **(changes or {})})
    )
    for lock in (ROOT / "emr" / "lock").glob("requirements-*.txt"):
        (root / "emr" / "lock" / lock.name).write_bytes(lock.read_bytes())
    return bundle.KitFiles.at(root)


def test_the_bundle_is_built_from_the_kit_files_it_is_given(tmp_path):
    kit = fake_kit(tmp_path / "kit")
    (tmp_path / "work").mkdir()
    _, plan = plan_for(tmp_path / "work", [*BASE, "--create"], kit=kit)
    bodies = {f.name: f.body for f in plan.files}
    assert bodies["spark_job.py"] == b"print('fake entry')\n"
    assert bodies["bootstrap-emr.sh"] == b"#!/usr/bin/env bash\necho fake\n"
    assert bodies["requirements.txt"].decode().splitlines()[2:] == ["numpy==1.0.1"]
    archive = zipfile.ZipFile(tmp_path / "work" / "fruits_pipeline.zip")
    assert archive.namelist() == [
        "fruits_pipeline/__init__.py",
        "fruits_pipeline/chain/step.py",
        "fruits_pipeline/cli.py",
    ]
    assert archive.read("fruits_pipeline/cli.py") == b"PROG = 'fake'\n"
    assert plan.job.submit.params["ReleaseLabel"] == "emr-7.99.0"


def test_kit_files_are_found_in_the_checkout_or_refused_in_one_line(tmp_path, capsys):
    assert bundle.KitFiles.find().root == ROOT
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "spark_job.py").write_text("")
    with pytest.raises(errors.UsageError) as refused:
        bundle.KitFiles.at(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"the EMR kit's files are not in {tmp_path} (missing: ")
    assert "src/fruits_pipeline, bootstrap/bootstrap-emr.sh, pyproject.toml" in message
    assert "scripts/spark_job.py" not in message and "\n" not in message


def test_shared_file_names_are_the_jobs():
    class Signer:  # share_links signs locally; this stands in for aws.Aws.presign
        def presign(self, bucket, key, seconds, content_type, region):
            return f"{key} {content_type}"

    run = s3paths.RunLayout("b", "p/runs/r1")
    links = dict(cli.share_links(Signer(), run, hours=1, region="eu-west-1"))
    assert set(layout.SHAREABLE) == {layout.CSV, layout.REPORT_HTML, layout.REPORT_JSON}
    assert list(links) == list(layout.SHAREABLE)
    assert links[layout.REPORT_HTML] == "p/runs/r1/output/report.html text/html; charset=utf-8"


# --------------------------------------------------------------------------- guards


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-2", "eu-central-2", "ap-south-1"])
def test_region_outside_the_eu_is_refused(region):
    with pytest.raises(errors.UsageError, match=f"region {region} is outside the EU"):
        options.parse_options([*BASE, "--create", "--region", region, *JOB])
    argv = [*BASE, "--create", "--region", region, "--allow-non-eu", *JOB]
    assert options.parse_options(argv).region == region


@pytest.mark.parametrize("region", sorted(["eu-west-1", "eu-central-1", "eu-north-1"]))
def test_eu_regions_are_accepted(region):
    assert options.parse_options([*BASE, "--create", "--region", region, *JOB]).region == region


def test_bucket_problems():
    blocked = dict.fromkeys(guards.PUBLIC_ACCESS_FLAGS, True)
    kms = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}
    assert guards.bucket_problems(blocked, kms) == []
    assert guards.bucket_problems(None, None) == [
        "no Block Public Access configuration",
        "no default encryption",
    ]
    half = {**blocked, "BlockPublicPolicy": False, "RestrictPublicBuckets": False}
    assert guards.bucket_problems(half, kms) == [
        "Block Public Access is off for BlockPublicPolicy, RestrictPublicBuckets"
    ]
    assert guards.region_of_location(None) == "us-east-1"
    assert guards.region_of_location("EU") == "eu-west-1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*BASE], "one of the arguments --create --cluster-id is required"),
        ([*BASE, "--create", "--cluster-id", "j-1"], "not allowed with argument"),
        (["--bucket", "Fruits_EU", "--input", "s3://x/", "--create"], "not a valid S3 bucket"),
        (["--bucket", "fruits-eu", "--input", "/data/Test", "--create"], "must be an s3:// URI"),
        ([*BASE, "--cluster-id", "cluster-1"], "expected j-"),
        ([*BASE, "--cluster-id", "j-1AB", "--core-nodes", "4"], "only applies with --create"),
        ([*BASE, "--create", "--prefix", "a/../b"], "'..' parts"),
        ([*BASE, "--create", "--share-hours", "200"], "between 1 and 168"),
        ([*BASE, "--create", "--", "--output", "s3://x/y"], "set by the submitter"),
        ([*BASE, "--create", "--", "--out", "s3://x/y"], "set by the submitter"),
        ([*BASE, "--create", "--", "--master", "yarn"], "set by the submitter"),
        ([*BASE, "--create", "--", "--weights", "/home/me/w.h5"], "cannot read a local file"),
        ([*BASE, "--create", "--", "--variance-threshold", "2"], "job option: argument"),
        ([*BASE, "--create", "--", "--no-such-option"], "job option: unrecognized"),
        # the job's default weights are a download the cluster cannot make
        ([*BASE, "--create"], "--weights imagenet (the job's default): the driver would"),
        ([*BASE, "--create", "--", "--weights", "imagenet"], "which the cluster cannot reach"),
    ],
)
def test_wrong_arguments_are_one_line_and_exit_2(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("submit_step.py: error: ")


def test_help_reads_well_and_the_script_runs_standalone():
    done = subprocess.run(
        [str(PYTHON), str(SUBMITTER), "--help"], capture_output=True, text=True, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    for words in ("--create", "--cluster-id", "--dry-run", "--share", "--allow-non-eu"):
        assert words in done.stdout
    assert "job options (after --)" in done.stdout
    bad = subprocess.run([str(PYTHON), str(SUBMITTER), "--create"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0


def test_the_console_script_answers_help_and_refuses_in_one_line():
    console = ROOT / ".venv" / "bin" / "fruits-pipeline-emr"
    done = subprocess.run([str(console), "--help"], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: fruits-pipeline-emr ")
    assert "fruits-pipeline-emr --bucket my-fruits-eu" in done.stdout  # the examples
    bad = subprocess.run([str(console), "--create"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("fruits-pipeline-emr: error: the following arguments")


def test_the_script_is_a_thin_entry_point():
    text = SUBMITTER.read_text()
    assert len(text.splitlines()) < 100
    assert "from fruits_pipeline.emr.cli import main" in text
    assert "sys.path" not in text


def test_the_submitter_starts_without_spark_numpy_tensorflow_or_boto3():
    probe = (
        "import sys\n"
        "from fruits_pipeline.emr import cli\n"
        "try:\n cli.main(['--help'])\nexcept SystemExit:\n pass\n"
        "cli.main(['--create'])\n"
        "heavy = ('pyspark', 'numpy', 'tensorflow', 'boto3', 'botocore')\n"
        "print(sorted(name for name in heavy if name in sys.modules))"
    )
    done = subprocess.run([str(PYTHON), "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- watching


def scripted(states):
    """Return a poll function that answers ``states`` (step, cluster[, reason]) in order."""
    answers = iter(states)
    return lambda: watch.StepStatus(*next(answers))


def test_watch_prints_each_change_with_elapsed_time():
    clock = iter(range(0, 10_000, 30))
    lines: list[str] = []
    states = [
        ("PENDING", "STARTING"),
        ("PENDING", "STARTING"),
        ("PENDING", "BOOTSTRAPPING"),
        ("RUNNING", "RUNNING"),
        ("RUNNING", "RUNNING"),
        ("COMPLETED", "RUNNING"),
    ]
    result = watch.watch_step(
        scripted(states),
        interval=30,
        ends=targets.EmrOnEc2.ends,
        sleep=lambda s: None,
        clock=lambda: next(clock),
        emit=lines.append,
    )
    assert result.succeeded and result.state == "COMPLETED"
    assert [line.split("]")[1].split() for line in lines] == [
        ["step", "PENDING", "cluster", "STARTING"],
        ["step", "PENDING", "cluster", "BOOTSTRAPPING"],
        ["step", "RUNNING", "cluster", "RUNNING"],
        ["step", "COMPLETED", "cluster", "RUNNING"],
    ]
    assert lines[0].strip().startswith("[   0:30]")
    assert watch.format_elapsed(3725) == "1:02:05"


def test_watch_reports_a_failed_step_and_an_ended_cluster():
    failed = watch.watch_step(
        scripted([("FAILED", "TERMINATING", "Step failed with exitCode 1")]),
        interval=0,
        ends=targets.EmrOnEc2.ends,
        emit=lambda line: None,
    )
    assert not failed.succeeded and failed.reason == "Step failed with exitCode 1"
    ended = watch.watch_step(
        scripted(
            [("PENDING", "TERMINATED_WITH_ERRORS", "bootstrap action 1 returned non-zero")],
        ),
        interval=0,
        ends=targets.EmrOnEc2.ends,
        emit=lambda line: None,
    )
    assert not ended.succeeded
    assert ended.reason == "the cluster ended first: bootstrap action 1 returned non-zero"


def test_log_locations():
    places = targets.log_locations("s3://b/p/runs/r1/logs/", "j-1", "s-2", "eu-west-1")
    assert places["step stderr"] == "s3://b/p/runs/r1/logs/j-1/steps/s-2/stderr.gz"
    assert places["containers"] == "s3://b/p/runs/r1/logs/j-1/containers/"
    assert "eu-west-1.console.aws.amazon.com" in places["console"]
    assert "j-1" in places["console"]


def test_wait_and_share_reports():
    places = targets.log_locations("s3://b/logs/", "j-1", "s-2", "eu-west-1")
    done = watch.WatchResult("COMPLETED", True, "", 1140)
    text = watch.wait_report(done, "s-2", places, "s3://b/p/runs/r1/output/")
    assert text.splitlines() == [
        "step s-2 COMPLETED after 19:00: succeeded",
        "results: s3://b/p/runs/r1/output/",
    ]
    failed = watch.WatchResult("FAILED", False, "Step failed with exitCode 1", 75)
    text = watch.wait_report(failed, "s-2", places, "s3://b/p/runs/r1/output/")
    assert text.splitlines()[0] == (
        "step s-2 FAILED after 1:15: did not succeed (Step failed with exitCode 1)"
    )
    assert "s3://b/logs/j-1/steps/s-2/stderr.gz" in text
    assert "Spark History Server" in text
    expires = datetime(2025, 2, 1, 14, 25, tzinfo=UTC)
    text = cli.share_report([("report.html", "https://x/y?z")], expires, waited=True)
    assert text.splitlines()[:2] == [
        "private links for reviewers, valid until 2025-02-01 14:25 UTC:",
        "  report.html       https://x/y?z",
    ]
