"""The IDE side of Pyzo's kernel protocol, for ``test_pyzo_kernel.py``.

Run as a child process on either yoton: ours, or 2.x (pyzo's copy), whichever
``import yoton`` finds (see ``yoton2.run_yoton`` / ``run_yoton2``). It does what
Pyzo's IDE process does with the kernel, written from what
``pyzo/core/kernelbroker.py`` and ``pyzo/core/shell.py`` do, with no Qt:

* a *broker* context binds ``localhost:PYZO`` (``max_tries=256``, name
  "kernel") for the kernel and ``localhost:PYZO+256`` (name "ide") for the
  shell, publishes the startup info on ``stat-startup`` and starts the kernel as
  the broker does (``python <pyzo>/pyzokernel/start.py <port>`` through a shell,
  ``cwd`` and ``PYTHONPATH`` the pyzo directory, stdout and stderr read by a
  thread and published on ``strm-raw``);
* a *shell* context connects to the broker (so the kernel's messages take two
  hops) with the shell's channels: the ``strm-*`` streams (out and err in sync
  mode), ``ctrl-command``, ``ctrl-code``, the ``stat-*`` states and the
  ``reqp-introspect`` requester.

The test drives it with one JSON object per stdin line (``{"op": ..., ...}``)
and reads one ``REPLY <json>`` line per command. Waiting is polling a condition
with a deadline while running yoton's events, as an IDE's event loop does
(2.x makes progress on requests only while its events are processed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import yoton

STREAMS = ("out", "err", "raw", "echo", "prompt", "broker")
#: Poll interval of the IDE's "event loop" while it waits for a condition.
TICK = 0.005


class Ide:
    def __init__(self) -> None:
        # The broker (kernelbroker.KernelBroker._create_channels).
        self.bct = bct = yoton.Context()
        self.b_strm_broker = yoton.PubChannel(bct, "strm-broker")
        self.b_strm_raw = yoton.PubChannel(bct, "strm-raw")
        self.b_strm_prompt = yoton.PubChannel(bct, "strm-prompt")
        self.b_ctrl_broker = yoton.SubChannel(bct, "ctrl-broker")
        self.b_stat_startup = yoton.StateChannel(bct, "stat-startup", yoton.OBJECT)
        self.b_stat_interpreter = yoton.StateChannel(bct, "stat-interpreter")
        self.b_reqp_control = yoton.ReqChannel(bct, "reqp-control")
        # The shell (shell.PythonShell.connectToKernel).
        self.sct = sct = yoton.Context()
        self.subs = {name: yoton.SubChannel(sct, "strm-" + name) for name in STREAMS}
        self.s_strm_action = yoton.SubChannel(sct, "strm-action", yoton.OBJECT)
        for name in ("out", "err"):
            self.subs[name].set_sync_mode(True)
        self.s_ctrl_command = yoton.PubChannel(sct, "ctrl-command")
        self.s_ctrl_code = yoton.PubChannel(sct, "ctrl-code", yoton.OBJECT)
        self.s_ctrl_broker = yoton.PubChannel(sct, "ctrl-broker")
        self.s_stat_interpreter = yoton.StateChannel(sct, "stat-interpreter")
        self.s_stat_cd = yoton.StateChannel(sct, "stat-cd")
        self.s_stat_debug = yoton.StateChannel(sct, "stat-debug", yoton.OBJECT)
        self.s_stat_startup = yoton.StateChannel(sct, "stat-startup", yoton.OBJECT)
        self.s_stat_breakpoints = yoton.StateChannel(sct, "stat-breakpoints", yoton.OBJECT)
        # (The shell uses a 0.5 s auto-cancel; a loaded test machine needs more.)
        self.s_request = yoton.ReqChannel(sct, "reqp-introspect", 30.0)
        self.text = {name: "" for name in STREAMS}
        self.prompts = 0
        self.process: subprocess.Popen[bytes] | None = None  # (set by op_start)
        self.kernel_con: yoton.Connection | None = None
        self.kernel_closed: threading.Event | None = None

    # -- the IDE's event loop ------------------------------------------------------------

    def pump(self) -> None:
        yoton.process_events(False)
        for name, sub in self.subs.items():
            while True:
                msg = sub.recv(False)
                if not msg:
                    break
                self.text[name] += msg
                if name == "prompt":
                    self.prompts += 1

    def wait_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if predicate():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(TICK)  # polling a condition with a deadline, as an event loop would

    # -- commands ---------------------------------------------------------------------------

    def op_start(self, pyzo_dir, start_dir, env, timeout):
        info = {
            "name": "Python",
            "exe": sys.executable,
            "gui": "none",
            "pythonPath": "",
            "projectPath": "",
            "scriptFile": "",
            "startDir": start_dir,
            "startupScript": "",
            "argv": "",
            "environ": "",
        }
        # Pyzo's order: host the IDE's connection, the shell connects, then
        # the broker starts the kernel (so the shell misses nothing).
        ide_con = self.bct.bind("localhost:PYZO+256", max_tries=256, name="ide")
        self.sct.connect(f"localhost:{ide_con.port1}", timeout=timeout)
        self.b_stat_startup.send(info)
        self.kernel_con = con = self.bct.bind("localhost:PYZO", max_tries=256, name="kernel")
        start = os.path.join(pyzo_dir, "pyzokernel", "start.py")
        command = f'"{sys.executable}" "{start}" {con.port1}'
        kernel_env = dict(os.environ, PYTHONPATH=pyzo_dir, TERM="dumb", **env)
        self.process = subprocess.Popen(
            command,
            shell=True,
            env=kernel_env,
            cwd=pyzo_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read_raw, daemon=True).start()
        con.timeout = 0.5  # as the broker: "very busy" notices (not used here)
        self.kernel_closed = kernel_closed = threading.Event()
        con.closed.bind(lambda *args: kernel_closed.set())
        ready = self.wait_until(lambda: self.s_stat_interpreter.recv() == "Ready", timeout)
        return {
            "ready": ready,
            "kernel_pid": con.pid2 if con.is_connected else 0,
            "shell_pid": self.process.pid,
            "state": self.s_stat_interpreter.recv(),
        }

    def _read_raw(self) -> None:
        # kernelbroker.StreamReader: the kernel's own stdout/stderr, to strm-raw.
        assert self.process is not None and self.process.stdout is not None  # op_start's pipe
        for line in self.process.stdout:
            try:
                self.b_strm_raw.send(line.decode("utf-8", "replace"))
            except OSError:
                break

    def op_command(self, text):
        self.s_ctrl_command.send(text)  # shell.executeCommand
        return {}

    def op_code(self, source, fname, lineno, cell_name):
        msg = {  # shell.executeCode
            "source": source,
            "fname": fname,
            "lineno": lineno,
            "cellName": cell_name,
            "changeDir": 0,
        }
        self.s_ctrl_code.send(msg)
        return {}

    def op_wait(self, stream, contains, timeout, count=1):
        ok = self.wait_until(lambda: self.text[stream].count(contains) >= count, timeout)
        return {"ok": ok, "text": self.text[stream]}

    def op_wait_state(self, value, timeout):
        ok = self.wait_until(lambda: self.s_stat_interpreter.recv() == value, timeout)
        return {"ok": ok, "state": self.s_stat_interpreter.recv()}

    def op_introspect(self, method, args, timeout):
        future = getattr(self.s_request, method)(*args)
        ok = self.wait_until(future.done, timeout)
        if not ok:
            return {"ok": False, "why": "not done in time"}
        if future.cancelled():
            return {"ok": False, "why": "cancelled"}
        if future.exception() is not None:
            return {"ok": False, "why": f"error: {future.exception()}"}
        return {"ok": True, "result": future.result()}

    def op_interrupt_signal(self):
        assert self.kernel_con is not None, "op_start first"
        os.kill(self.kernel_con.pid2, signal.SIGINT)  # the broker's way on POSIX
        return {}

    def op_interrupt_request(self):
        self.b_reqp_control.interrupt()  # the broker's way on Windows
        return {}

    def op_terminate(self, timeout):
        # KernelTerminator's first action: ask the kernel to close its stdin.
        process, kernel_closed = self.process, self.kernel_closed
        assert process is not None and kernel_closed is not None, "op_start first"
        self.b_reqp_control.terminate()
        exited = self.wait_until(lambda: process.poll() is not None, timeout)
        closed = self.wait_until(kernel_closed.is_set, timeout)
        return {"exited": exited, "returncode": process.poll(), "closed": closed}

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.sct.close()
        self.bct.close()


def main() -> None:
    ide = Ide()
    print("IDE-READY", yoton.__version__, flush=True)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request.pop("op")
            if op == "quit":
                break
            reply = getattr(ide, "op_" + op)(**request)
            print("REPLY " + json.dumps(reply), flush=True)
    finally:
        ide.close()


if __name__ == "__main__":
    main()
