"""The machines a job's workers run on: the first worker on each records what its machine has
(GPU, driver, CUDA, onnxruntime and its providers, NVENC/NVDEC: `batch_jobs.selfcheck`) in
the job record, so `dropbatch status` shows what the job really ran on — a GPU VM whose GPU
did not work shows it there, not only in a log."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from batch_jobs.selfcheck import machine_facts
from core.logs import event
from core.status.base import StatusStore
from core.status.model import JobRecord, MachineFacts

log = logging.getLogger("dropbatch.task")


def machine_id() -> str:
    """The kernel's boot id: one per VM and boot, the same in every container on it (each
    container may name its own host); the host name where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def add_machine(status: StatusStore, job_id: str, facts: MachineFacts) -> bool:
    """Record the machine's facts unless a worker on it did first; True if this call did."""

    def add(record: JobRecord) -> bool:
        if any(m.machine == facts.machine for m in record.machines):
            return False
        record.machines.append(facts)
        return True

    return status.transact(job_id, add)[1]


def record_this_machine(
    status: StatusStore, record: JobRecord, gpu_asked: bool
) -> MachineFacts | None:
    """This machine's facts, gathered and recorded when no worker here has done so (workers
    that start together may each gather them; one record is kept). None when already known."""
    machine = machine_id()
    if any(m.machine == machine for m in record.machines):
        return None
    facts = machine_facts(machine)
    if not add_machine(status, record.job_id, facts):
        return None
    event(log, "machine recorded", **facts.model_dump(exclude={"recorded_at"}))
    if gpu_asked and not facts.nvenc:
        # Not a failure: x264 gives the same parts, only slower, and the GPU's own work (the
        # models) is held to the GPU by processors/gpu.py. Said here, once per machine.
        event(
            log,
            "no NVENC on a GPU job's machine: its parts encode with libx264",
            logging.WARNING,
            gpus=facts.gpus,
        )
    return facts
