"""Where the step runs: the one seam a cluster target plugs into, and its first target,
EMR on EC2.

The run flow (cli.py) speaks only to ``Target``: it asks it which platform its nodes install
wheels for (the plan then adds that wheelhouse), for the Job that runs the plan's
spark-submit command, lets it check that it can take the run, submits, polls the status,
and asks where the logs are.  Another target (EMR Serverless, say) is one more
``Target`` subclass here, or in a module of its own, and one line in ``TARGETS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fruits_pipeline.emr.aws import Aws
from fruits_pipeline.emr.bundle import KitFiles
from fruits_pipeline.emr.errors import UsageError
from fruits_pipeline.emr.options import NewCluster, Options
from fruits_pipeline.emr.requests import (
    Job,
    Request,
    add_steps_request,
    cluster_values,
    load_cluster_template,
    run_job_flow_request,
    step_config,
)
from fruits_pipeline.emr.s3paths import RunLayout
from fruits_pipeline.emr.watch import EndStates, StepStatus
from fruits_pipeline.emr.wheelhouse import Wheelhouse, architecture_of


@dataclass(frozen=True)
class Submission:
    """What the target answered when it took the step: the ids of the cluster (or what
    stands for one) and of the step, and a few words on the cluster for the summary."""

    cluster_id: str
    step_id: str
    cluster_note: str


class Target(ABC):
    """A place that runs the step: what the run flow needs from it."""

    #: which of its states end a watch
    ends: ClassVar[EndStates]

    @classmethod
    @abstractmethod
    def from_options(cls, options: Options, kit: KitFiles) -> Target:
        """Return the target the command line describes."""

    @abstractmethod
    def architecture(self) -> str | None:
        """Return the CPU architecture the target's nodes install wheels for (x86_64 or
        aarch64), or None when the run installs nothing."""

    @abstractmethod
    def job(self, command: list[str], layout: RunLayout, wheelhouse: Wheelhouse | None) -> Job:
        """Return the Job that runs ``command`` (the spark-submit line) for the run at
        ``layout``, its nodes installing from ``wheelhouse``: local files only, no network."""

    @abstractmethod
    def prepare(self, aws: Aws, layout: RunLayout) -> str | None:
        """Check, before anything is uploaded, that the target can take the run (with the
        requests its Job lists in ``checks``); raise UsageError when it cannot.  Return the
        URI its logs go to (None: unknown)."""

    @abstractmethod
    def submit(self, aws: Aws, job: Job) -> Submission:
        """Send the Job's submit request; return the Submission."""

    @abstractmethod
    def status(self, aws: Aws, submission: Submission) -> StepStatus:
        """Return the step's and the cluster's current state."""

    @abstractmethod
    def log_places(self, submission: Submission, log_uri: str | None) -> dict[str, str]:
        """Return where to look, by name: the console page, the step's logs."""


@dataclass(frozen=True)
class EmrOnEc2(Target):
    """EMR on EC2: a new transient cluster that ends with the step (RunJobFlow), or a step
    added to a running cluster (``--cluster-id``, AddJobFlowSteps)."""

    ends: ClassVar[EndStates] = EndStates(
        succeeded="COMPLETED",
        step_ended=frozenset({"COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"}),
        cluster_ended=frozenset({"TERMINATED", "TERMINATED_WITH_ERRORS"}),
    )
    #: A running cluster in these states can still take a step.
    usable: ClassVar[frozenset[str]] = frozenset(
        {"STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"}
    )

    run_id: str
    region: str
    cluster_id: str | None  # None: a new cluster
    new_cluster: NewCluster
    cluster_config: Path  # emr/cluster-config.json

    @classmethod
    def from_options(cls, options: Options, kit: KitFiles) -> EmrOnEc2:
        return cls(
            run_id=options.run_id,
            region=options.region,
            cluster_id=options.cluster_id,
            new_cluster=options.new_cluster,
            cluster_config=kit.cluster_config,
        )

    def architecture(self) -> str | None:
        """The new cluster's, from its instance types; None for a running cluster, whose
        nodes installed theirs when it started."""
        if self.cluster_id is not None:
            return None
        groups = load_cluster_template(self.cluster_config)["Instances"]["InstanceGroups"]
        kinds = {architecture_of(group["InstanceType"]) for group in groups}
        if len(kinds) != 1:
            raise UsageError(
                f"{self.cluster_config}: the instance types mix {' and '.join(sorted(kinds))}; "
                "one bootstrap installs one platform's wheels"
            )
        return kinds.pop()

    def job(self, command: list[str], layout: RunLayout, wheelhouse: Wheelhouse | None) -> Job:
        if self.cluster_id is None:
            if wheelhouse is None:
                raise ValueError("a new cluster needs the wheelhouse its nodes install from")
            step = step_config(self.run_id, command, "TERMINATE_CLUSTER")
            body = run_job_flow_request(
                load_cluster_template(self.cluster_config),
                cluster_values(self.run_id, self.new_cluster, layout, wheelhouse),
                step,
            )
            return Job((), step, Request("emr", "RunJobFlow", body))
        step = step_config(self.run_id, command, "CONTINUE")  # not our cluster to end
        check = Request("emr", "DescribeCluster", {"ClusterId": self.cluster_id})
        submit = Request("emr", "AddJobFlowSteps", add_steps_request(self.cluster_id, step))
        return Job((check,), step, submit)

    def prepare(self, aws: Aws, layout: RunLayout) -> str | None:
        if self.cluster_id is None:
            return layout.logs
        cluster = self.cluster(aws, self.cluster_id)
        state = cluster["Status"]["State"]
        if state not in self.usable:
            raise UsageError(f"cluster {self.cluster_id} is {state}: it cannot run a step")
        return cluster.get("LogUri")

    def submit(self, aws: Aws, job: Job) -> Submission:
        emr = aws.client("emr")
        params = job.submit.params
        if job.submit.operation == "RunJobFlow":
            cluster_id = emr.run_job_flow(**params)["JobFlowId"]
            steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
            step_id = next(s["Id"] for s in steps if s["Name"] == job.step["Name"])
            return Submission(cluster_id, step_id, "new, transient: ends with the step")
        step_id = emr.add_job_flow_steps(**params)["StepIds"][0]
        return Submission(params["JobFlowId"], step_id, "running cluster")

    def status(self, aws: Aws, submission: Submission) -> StepStatus:
        step = aws.client("emr").describe_step(
            ClusterId=submission.cluster_id, StepId=submission.step_id
        )["Step"]["Status"]
        cluster = self.cluster(aws, submission.cluster_id)["Status"]
        ended = cluster["State"] in self.ends.cluster_ended
        reason = state_reason(step) or (state_reason(cluster) if ended else "")
        return StepStatus(step["State"], cluster["State"], reason)

    def log_places(self, submission: Submission, log_uri: str | None) -> dict[str, str]:
        return log_locations(log_uri, submission.cluster_id, submission.step_id, self.region)

    @staticmethod
    def cluster(aws: Aws, cluster_id: str) -> dict:
        """Return DescribeCluster's Cluster."""
        return aws.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]


def state_reason(status: dict) -> str:
    """Return an EMR state's reason (or failure details) as one line, or ''."""
    failure = status.get("FailureDetails") or {}
    text = failure.get("Message") or failure.get("Reason") or ""
    text = text or (status.get("StateChangeReason") or {}).get("Message", "")
    return " ".join(str(text).split())


def log_locations(log_uri: str | None, cluster_id: str, step_id: str, region: str) -> dict:
    """Return where to look on EMR on EC2: the step's stderr, the YARN container logs, the
    console page (with the persistent Spark History Server)."""
    base = (log_uri or "").rstrip("/")
    places = {
        "console": f"https://{region}.console.aws.amazon.com/emr/home?region={region}"
        f"#/clusterDetails/{cluster_id}",
    }
    if base:
        places["step stderr"] = f"{base}/{cluster_id}/steps/{step_id}/stderr.gz"
        places["containers"] = f"{base}/{cluster_id}/containers/"
    return places


#: The targets by name.  A new target: its class, and one line here.
TARGETS: dict[str, type[Target]] = {"emr-on-ec2": EmrOnEc2}
DEFAULT_TARGET = "emr-on-ec2"


def target_for(options: Options, kit: KitFiles, name: str = DEFAULT_TARGET) -> Target:
    """Return the target called ``name``, set up from the command line."""
    return TARGETS[name].from_options(options, kit)
