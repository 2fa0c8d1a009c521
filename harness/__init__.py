"""Running the real system from outside: child processes with their logs, free ports,
waiting for conditions, Celery workers, uvicorn servers, a Redis of one's own and a
scratch database. Shared by the tests (tests/support.py), the fault-injection run
(scripts/chaos) and the benchmark (bench/); not part of the installed product."""

from harness.processes import (
    ROOT,
    Process,
    child_env,
    children_of,
    free_port,
    log_path,
    pid_alive,
    port_open,
    send_signal,
    wait_until,
)
from harness.services import (
    GrpcServer,
    RedisServer,
    Server,
    recreate_database,
    scratch_database,
    start_grpc_server,
    start_server,
    start_worker,
    wait_worker_ready,
    worker_args,
)

__all__ = [
    "ROOT",
    "GrpcServer",
    "start_grpc_server",
    "Process",
    "RedisServer",
    "Server",
    "child_env",
    "children_of",
    "free_port",
    "log_path",
    "pid_alive",
    "port_open",
    "recreate_database",
    "scratch_database",
    "send_signal",
    "start_server",
    "start_worker",
    "wait_until",
    "wait_worker_ready",
    "worker_args",
]
