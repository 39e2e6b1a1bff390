"""The trusted half of a sandboxed run: executed as a script by ``python -I -S``.

It reads the run's spec (limits, source, tests), lowers its own resource limits (hard limits
too, so the submission cannot raise them again), installs an audit hook that refuses files
outside the working directory, sockets, processes and native code, then runs the
submission and calls its function once per test. Each test's outcome (the returned value as
JSON, or the exception) is written as one JSON line to the result file the harness opened
before the hook was installed; the *parent* compares values with the expected ones.

It imports only the standard library and must never import Firelake: it runs with ``-S``
(no site-packages) inside the sandbox. See :mod:`agents.cdu.sandbox` for what this does and
does not protect against.
"""

import json
import os
import resource
import signal
import sys

_RESULT_MARK = "fl-result"
_DENIED_IMPORTS = frozenset({"ctypes", "_ctypes", "cffi", "_posixsubprocess", "multiprocessing"})
_DENIED_EVENTS = {
    "os.fork": "creating a process (fork)",
    "os.forkpty": "creating a process (forkpty)",
    "os.posix_spawn": "creating a process (posix_spawn)",
    "os.exec": "running a program (exec)",
    "os.system": "running a shell command",
    "os.spawn": "creating a process (spawn)",
    "subprocess.Popen": "running a program (subprocess)",
    "socket.__new__": "opening a socket (no network in the sandbox)",
    "socket.connect": "connecting a socket (no network in the sandbox)",
    "socket.getaddrinfo": "resolving a host name (no network in the sandbox)",
    "os.kill": "signalling a process",
    "os.chdir": "leaving the working directory",
    "resource.setrlimit": "changing resource limits",
    "sys.addaudithook": "adding an audit hook",
}


def _set_limits(limits):
    # Should the scorer die before its wall-clock limit, the run still ends (SIGALRM).
    signal.alarm(int(float(limits["wall_seconds"])) + 2)
    pairs = (
        (resource.RLIMIT_CPU, int(limits["cpu_seconds"]), int(limits["cpu_seconds"]) + 1),
        (resource.RLIMIT_AS, int(limits["memory_bytes"]), int(limits["memory_bytes"])),
        (resource.RLIMIT_FSIZE, int(limits["output_bytes"]), int(limits["output_bytes"])),
        (resource.RLIMIT_NPROC, 0, 0),
        (resource.RLIMIT_NOFILE, 32, 32),
        (resource.RLIMIT_CORE, 0, 0),
    )
    for which, soft, hard in pairs:
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            pass  # a limit the platform lacks; the parent's wall clock still applies


def _install_hook(workdir, readable, violations):
    workdir = os.path.realpath(workdir)
    readable = tuple(os.path.realpath(p) for p in readable)
    real = os.path.realpath

    def inside(path, roots):
        for root in roots:
            if path == root or path.startswith(root + os.sep):
                return True
        return False

    def hook(event, args):
        reason = None
        if event in _DENIED_EVENTS:
            reason = _DENIED_EVENTS[event]
        elif event == "import" and args and str(args[0]).split(".")[0] in _DENIED_IMPORTS:
            reason = f"importing {args[0]} (native code and processes are not allowed)"
        elif event == "open" and args and isinstance(args[0], (str, bytes)):
            raw = args[0].decode(errors="replace") if isinstance(args[0], bytes) else args[0]
            path = real(os.path.join(workdir, raw))
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            writing = any(c in mode for c in "wax+")
            if not inside(path, (workdir,)) and (writing or not inside(path, readable)):
                reason = f"opening {raw!r} outside the working directory"
        elif event in ("os.listdir", "os.scandir", "glob.glob") and args:
            raw = args[0] if isinstance(args[0], str) else "."
            if not inside(real(os.path.join(workdir, raw or ".")), (workdir, *readable)):
                reason = f"listing {raw!r} outside the working directory"
        if reason is not None:
            if len(violations) < 20:
                violations.append(reason)
            raise PermissionError(f"sandbox: {reason}")

    sys.addaudithook(hook)


def _jsonable(value):
    """The value as JSON text, or an error naming its type (tuples become lists)."""
    try:
        return json.dumps(value, allow_nan=True), None
    except (TypeError, ValueError):
        return None, f"returned a {type(value).__name__}, which is not comparable as JSON"


def main():
    spec_path, result_path = sys.argv[1], sys.argv[2]
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    out = open(result_path, "w", encoding="utf-8")  # opened before the hook: only we write it

    def emit(record):
        out.write(json.dumps(record) + "\n")
        out.flush()

    violations = []
    emit({_RESULT_MARK: "started"})
    _set_limits(spec["limits"])
    readable = [p for p in sys.path if p] + [os.path.dirname(os.__file__)]
    _install_hook(spec["workdir"], readable, violations)
    namespace = {"__name__": "submission", "__builtins__": __builtins__}
    try:
        code = compile(spec["source"], "submission.py", "exec")
        exec(code, namespace)
    except MemoryError:
        emit({"load_error": "memory limit exceeded while loading the submission"})
        return
    except BaseException as exc:  # the submission's own error, whatever it is
        emit({"load_error": f"{type(exc).__name__}: {exc}"[:1000], "violations": violations})
        return
    function = namespace.get(spec["function"])
    if not callable(function):
        emit({"load_error": f"the submission defines no function {spec['function']}()"})
        return
    for test in spec["tests"]:
        record = {"test": test["name"]}
        try:
            value = function(*test["args"])
            record["value"], record["error"] = _jsonable(value)
        except MemoryError:
            record["error"] = "memory limit exceeded"
        except RecursionError:
            record["error"] = "RecursionError: maximum recursion depth exceeded"
        except BaseException as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        record["violations"] = list(violations)
        emit(record)
    emit({_RESULT_MARK: "done", "violations": violations})
    out.close()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
