"""The wheelhouse without a server: the committed locks against pyproject.toml's pins, the
lock writer's refusals, pip's cross-platform options, the choice of a lock by instance type,
and building a wheelhouse with the real pip from local wheels only."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest
from small_kit import PACKAGES, small_lock  # tests/emr/small_kit.py

from fruits_pipeline.emr import bundle, errors, lock, options, requests, targets, wheelhouse

ROOT = Path(__file__).resolve().parents[2]
KIT = bundle.KitFiles.find()
BASE = ["--bucket", "fruits-eu", "--input", "s3://fruits-eu/data/Test/", "--run-id", "r1"]
JOB = ["--", "--weights", "s3://models-eu/w.h5"]


def pyproject_pins() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["dependencies"]


@pytest.mark.parametrize("architecture", wheelhouse.ARCHITECTURES)
def test_the_lock_agrees_with_the_pins_of_pyproject(architecture):
    """Every pin the nodes install is in the lock at its version; the lock holds one wheel
    per package, for Python 3.11 on manylinux <= 2.34 of ``architecture``."""
    from pip._vendor.packaging import tags as wheel_tags
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import parse_wheel_filename
    from pip._vendor.packaging.version import Version

    locked = wheelhouse.read_lock(KIT.lock(architecture), architecture)
    environment = lock.node_environment(architecture)
    expected = {}
    for line in pyproject_pins():
        requirement = Requirement(line)
        if requirement.name in bundle.PROVIDED_BY_EMR:
            continue
        if requirement.marker is None or requirement.marker.evaluate(environment):
            (pin,) = requirement.specifier
            expected[wheelhouse.normalize_name(requirement.name)] = pin.version
    assert {name: locked.version_of(name) for name in expected} == expected
    assert "pyspark" not in {wheel.name for wheel in locked.wheels}  # EMR's own
    assert len(locked.wheels) > len(expected)  # the transitive packages too
    # what pip on a node accepts: CPython 3.11, manylinux up to glibc 2.34 (and the older
    # manylinux2010/manylinux1 names pip reads into manylinux2014), or pure Python
    legacy = [f"manylinux2010_{architecture}", f"manylinux1_{architecture}"]
    platforms = [*wheelhouse.platform_tags(architecture), *legacy]
    supported = set(wheel_tags.cpython_tags((3, 11), ["cp311"], platforms))
    supported |= set(wheel_tags.compatible_tags((3, 11), "cp311", platforms))
    for wheel in locked.wheels:
        name, version, _, tags = parse_wheel_filename(wheel.filename)
        assert (wheelhouse.normalize_name(name), version) == (wheel.name, Version(wheel.version))
        assert set(tags) & supported, wheel.filename


def test_the_two_locks_differ_only_where_the_pins_do():
    x86 = wheelhouse.read_lock(KIT.lock("x86_64"), "x86_64")
    arm = wheelhouse.read_lock(KIT.lock("aarch64"), "aarch64")
    assert x86.digest != arm.digest
    assert x86.version_of("tensorflow-cpu") and not x86.version_of("tensorflow")
    assert arm.version_of("tensorflow") == x86.version_of("tensorflow-cpu")
    assert x86.version_of("numpy") == arm.version_of("numpy") == "1.26.4"


def test_a_lock_reads_back_and_its_digest_ignores_comments(small_kit):
    locked = small_lock(small_kit)
    assert [w.name for w in locked.wheels] == sorted(PACKAGES)
    again = wheelhouse.parse_lock("# another header\n\n" + locked.text, "x86_64")
    assert again.digest == locked.digest
    changed = locked.text.replace("fp-gamma==0.3", "fp-gamma==0.4")
    assert wheelhouse.parse_lock(changed, "x86_64").digest != locked.digest
    with pytest.raises(errors.UsageError, match=r"lock:2: expected 'name==version --hash"):
        wheelhouse.parse_lock("# header\nnumpy==1.26.4\n", "x86_64")
    with pytest.raises(errors.UsageError, match="locked more than once: fp-beta"):
        line = next(w.line for w in locked.wheels if w.name == "fp-beta")
        wheelhouse.parse_lock(locked.text + line.replace("fp-beta", "fp_Beta") + "\n", "x86_64")
    with pytest.raises(errors.UsageError, match="python -m fruits_pipeline.emr.lock"):
        wheelhouse.read_lock(small_kit.root / "emr" / "lock" / "nothing.txt", "x86_64")


def report_item(name: str, requires: list[str], url: str | None = None) -> dict:
    filename = f"{name}-1.0-py3-none-any.whl"
    return {
        "metadata": {"name": name, "version": "1.0", "requires_dist": requires},
        "download_info": {
            "url": url or f"https://files.example/packages/{filename}",
            "archive_info": {"hashes": {"sha256": "a" * 64}},
        },
    }


def test_the_lock_writer_refuses_what_would_not_be_the_nodes_set():
    fine = {"install": [report_item("Foo_Bar", ["baz; extra == 'docs'", "qux; os_name == 'nt'"])]}
    (wheel,) = lock.wheels_of(fine, "aarch64")
    assert (wheel.name, wheel.filename) == ("foo-bar", "Foo_Bar-1.0-py3-none-any.whl")
    text = lock.lock_text([wheel], "aarch64")
    assert "python -m fruits_pipeline.emr.lock" in text
    assert wheelhouse.parse_lock(text, "aarch64").wheels == (wheel,)
    # pip evaluates markers for the machine it runs on, not for --platform
    here = lock.node_environment("x86_64")["platform_machine"]
    marker = {"install": [report_item("foo", [f"bar; platform_machine == '{here}'"])]}
    with pytest.raises(errors.UsageError, match="a aarch64 node would decide otherwise"):
        lock.wheels_of(marker, "aarch64")
    local = {"install": [report_item("foo", [], url="file:///opt/wheels/foo-1.0-py3-none-any.whl")]}
    with pytest.raises(errors.UsageError, match="not from the index"):
        lock.wheels_of(local, "x86_64")


def test_the_lock_writer_resolves_the_pins_markers_for_the_node(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[project]\ndependencies = ["
        "\"pyspark==3.5.6\", \"tensorflow-cpu==2.19.1; platform_machine == 'x86_64'\", "
        "\"tensorflow==2.19.1; platform_machine != 'x86_64'\", \"numpy==1.26.4\"]\n"
    )
    assert lock.top_requirements(pyproject, "x86_64") == ["tensorflow-cpu==2.19.1", "numpy==1.26.4"]
    assert lock.top_requirements(pyproject, "aarch64") == ["tensorflow==2.19.1", "numpy==1.26.4"]
    environment = lock.pip_environment()
    assert environment["PIP_CONFIG_FILE"] == os.devnull
    assert not {"PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"} & set(environment)


def test_pip_gets_the_nodes_platform():
    flags = wheelhouse.pip_platform_options("aarch64")
    pairs = list(zip(flags, flags[1:], strict=False))
    assert "--only-binary=:all:" in flags
    assert ("--python-version", "3.11") in pairs and ("--implementation", "cp") in pairs
    assert ("--abi", "cp311") in pairs
    platforms = [value for flag, value in pairs if flag == "--platform"]
    assert platforms[0] == "manylinux_2_34_aarch64" and platforms[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_17_aarch64" in platforms and "manylinux_2_35_aarch64" not in platforms
    with pytest.raises(errors.UsageError, match="no wheelhouse for armv7l"):
        wheelhouse.platform_tags("armv7l")


@pytest.mark.parametrize(
    ("instance_type", "architecture"),
    [
        ("m5.xlarge", "x86_64"),
        ("m6i.2xlarge", "x86_64"),
        ("g4dn.xlarge", "x86_64"),
        ("c6a.large", "x86_64"),
        ("m7g.xlarge", "aarch64"),
        ("c6gn.large", "aarch64"),
        ("r6gd.xlarge", "aarch64"),
        ("im4gn.large", "aarch64"),
        ("a1.large", "aarch64"),
    ],
)
def test_instance_types_name_their_architecture(instance_type, architecture):
    assert wheelhouse.architecture_of(instance_type) == architecture


def kit_with_instance_types(root: Path, *types: str) -> bundle.KitFiles:
    for part in ("src", "scripts", "bootstrap", "pyproject.toml"):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        (root / part).symlink_to(ROOT / part)
    shutil.copytree(ROOT / "emr", root / "emr")
    text = (root / "emr" / "cluster-config.json").read_text()
    for kind in types:
        text = text.replace('"m5.xlarge"', f'"{kind}"', 1)
    (root / "emr" / "cluster-config.json").write_text(text)
    return bundle.KitFiles.at(root)


def test_a_graviton_cluster_installs_the_aarch64_wheelhouse(tmp_path):
    kit = kit_with_instance_types(tmp_path / "arm", "m7g.xlarge", "m7g.xlarge", "m7g.xlarge")
    parsed = options.parse_options([*BASE, "--create", *JOB])
    plan = requests.make_plan(parsed, kit, tmp_path, targets.target_for(parsed, kit))
    arm = wheelhouse.read_lock(KIT.lock("aarch64"), "aarch64")
    assert plan.wheelhouse.lock.architecture == "aarch64"
    assert plan.wheelhouse.uri == f"s3://fruits-eu/fruits-pipeline/wheelhouse/{arm.digest}/"
    args = plan.job.submit.params["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    assert args[1] == plan.wheelhouse.uri

    mixed = kit_with_instance_types(tmp_path / "mixed", "m7g.xlarge")
    with pytest.raises(errors.UsageError, match="the instance types mix aarch64 and x86_64"):
        requests.make_plan(parsed, mixed, tmp_path, targets.target_for(parsed, mixed))
    running = options.parse_options([*BASE, "--cluster-id", "j-1ABC", *JOB])
    plan = requests.make_plan(running, KIT, tmp_path, targets.target_for(running, KIT))
    assert plan.wheelhouse is None  # a running cluster installed its own when it started


def test_what_a_wheelhouse_lacks(small_kit):
    locked = small_lock(small_kit)
    house = wheelhouse.Wheelhouse("b", "p/wheelhouse/d", locked, small_kit.lock("x86_64"))
    names = [w.filename for w in locked.wheels] + [wheelhouse.LOCK_NAME]
    everything = [house.key(name) for name in names]
    assert house.missing(everything) == []
    assert house.missing([]) == [w.filename for w in locked.wheels] + ["requirements-lock.txt"]
    assert house.missing(everything[1:]) == [locked.wheels[0].filename]
    assert wheelhouse.wheelhouse_prefix("", "d") == "wheelhouse/d"


def test_the_local_wheelhouse_is_built_by_pip_from_local_wheels_only(
    small_kit, small_wheels, tmp_path, monkeypatch
):
    """The submitter's real `pip download` (cross-platform options, hashes required), with
    pip's index disabled and only the small wheels to find."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", str(next(iter(small_wheels.values())).parent))
    locked = small_lock(small_kit, "aarch64")
    house = wheelhouse.Wheelhouse("b", "p", locked, small_kit.lock("aarch64"))
    files = wheelhouse.build_local(house, tmp_path / "built")
    assert sorted(files) == sorted(path.name for path in small_wheels.values())
    for path in small_wheels.values():
        assert files[path.name].read_bytes() == path.read_bytes()
    # a wheel whose bytes are not the locked ones: pip refuses it, in one line
    other = tmp_path / "other"
    other.mkdir()
    for path in small_wheels.values():
        shutil.copy(path, other / path.name)
    (other / small_wheels["fp-beta"].name).write_bytes(b"PK not the locked wheel")
    monkeypatch.setenv("PIP_FIND_LINKS", str(other))
    with pytest.raises(errors.UsageError, match="pip could not download the wheelhouse") as failed:
        wheelhouse.build_local(house, tmp_path / "built-again")
    assert "\n" not in str(failed.value)
