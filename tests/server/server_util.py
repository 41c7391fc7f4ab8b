"""Helpers shared by the taskmoe-server tests and benchmarks/bench_server.py: start the real
server on a free loopback port, wait until it listens, stop it."""

import os
import re
import signal
import subprocess
import threading
import time

LISTENING = re.compile(r"listening on http://([^:]+):(\d+)")


class Server:
    """A taskmoe-server process. Its stderr is collected in self.log (read by a thread, so the
    pipe never fills)."""

    def __init__(self, binary, args, ready_timeout=120, env=None):
        self.args = [binary, "--port", "0"] + list(args)
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace", env=env)
        self.log = []
        self.port = None
        ready = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                m = LISTENING.search(line)
                if m and self.port is None:
                    self.port = int(m.group(2))
                    ready.set()
            ready.set()  # exited before listening

        self._reader = threading.Thread(target=drain, daemon=True)
        self._reader.start()
        if not ready.wait(ready_timeout) or self.port is None:
            self.kill()
            raise RuntimeError("taskmoe-server did not start: %s\n%s" % (" ".join(self.args), "".join(self.log)))
        self.url = "http://127.0.0.1:%d" % self.port

    def stop(self, timeout=30):
        """SIGTERM, then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("taskmoe-server did not exit %d s after SIGTERM\n%s" % (timeout, "".join(self.log)))
        self._reader.join(5)
        self._close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        self._close()

    def _close(self):
        for f in (self.proc.stdout, self.proc.stderr):
            if f and not f.closed:
                try:
                    f.close()
                except (OSError, ValueError):
                    pass

    def text_log(self):
        return "".join(self.log)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def run_cli(binary, args, input_text=None, timeout=120):
    return subprocess.run([binary] + list(args), input=input_text, capture_output=True, text=True, timeout=timeout)


def wait_until(predicate, timeout, interval=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def rss_kb(pid):
    """Resident set size of a process in KiB (VmRSS), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def here():
    return os.path.dirname(os.path.abspath(__file__))
