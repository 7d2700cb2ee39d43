"""Waiting for local jobs in tests. Each intake has a launcher of its own (functions-framework
even loads the trigger module afresh per app), so a test waits on the job's executor thread
by its name rather than through whichever launcher happened to start it."""

from __future__ import annotations

import threading

from batch_jobs.local_executor import executor_thread_name


def wait_local_job(job_id: str, timeout: float = 300) -> bool:
    """Join the thread running the job's tasks here; True once it has ended (or never ran)."""
    threads = [t for t in threading.enumerate() if t.name == executor_thread_name(job_id)]
    for thread in threads:
        thread.join(timeout)
    return not any(t.is_alive() for t in threads)


def wait_local_jobs(timeout: float = 120) -> None:
    """Join every local job's thread: no task outlives the test that started it."""
    prefix = executor_thread_name("")
    for thread in threading.enumerate():
        if thread.name.startswith(prefix) and thread is not threading.current_thread():
            thread.join(timeout)
