"""Run the unit's command the way systemd would, without systemd.

install.sh uses this in its direct service mode (``--service-mode direct``),
for tests and for machines without systemd: ``start`` runs the command in its
own session with a notify socket, waits for READY=1 (as ``systemctl start``
waits for a Type=notify unit) and leaves it running; ``stop`` sends SIGTERM
and waits, as ``systemctl stop``; ``status`` says whether it runs. Standard
library only: it runs with whichever Python made the virtualenvs.

    service-direct.py start PIDFILE LOGFILE WORKDIR TIMEOUT -- COMMAND...
    service-direct.py stop PIDFILE TIMEOUT
    service-direct.py status PIDFILE
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def _pid(pidfile: str) -> int | None:
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    # A zombie is not running.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except OSError:
        return None
    return pid


def start(pidfile: str, logfile: str, workdir: str, timeout: float, command: list[str]) -> int:
    if _pid(pidfile) is not None:
        print("error: already running", file=sys.stderr)
        return 1
    directory = tempfile.mkdtemp(prefix="anpr-notify-")
    path = os.path.join(directory, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    env["NOTIFY_SOCKET"] = path
    try:
        with open(logfile, "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with open(pidfile, "w", encoding="ascii") as handle:
            handle.write(f"{process.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if process.poll() is not None:
                print(f"error: exited with status {process.returncode} before READY", file=sys.stderr)
                return 1
            if remaining <= 0:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                print(f"error: no READY within {timeout:g} s", file=sys.stderr)
                return 1
            receiver.settimeout(min(remaining, 0.5))
            try:
                data = receiver.recv(4096).decode("utf-8", "replace")
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            if fields.get("READY") == "1":
                print(f"READY: {fields.get('STATUS', '')}")
                return 0
    finally:
        receiver.close()
        shutil.rmtree(directory, ignore_errors=True)


def stop(pidfile: str, timeout: float) -> int:
    pid = _pid(pidfile)
    if pid is None:
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid(pidfile) is not None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
    os.unlink(pidfile)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 7 and argv[0] == "start" and argv[5] == "--":
        return start(argv[1], argv[2], argv[3], float(argv[4]), argv[6:])
    if len(argv) == 3 and argv[0] == "stop":
        return stop(argv[1], float(argv[2]))
    if len(argv) == 2 and argv[0] == "status":
        return 0 if _pid(argv[1]) is not None else 3
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
