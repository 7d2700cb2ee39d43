"""Planning, launching and running the chunked tasks of a job."""
