"""The sandbox's child side: the bootstrap program text that isolates and runs one program.

The harness (:mod:`ar2diff.evaluation.sandbox`) passes it a JSON config: namespace flags, mounts,
rlimits, uid, argv, cwd and the status pipe. It uses the standard library only.
"""

# Runs as `python -I -S -c BOOTSTRAP CONFIG` in a new session. It enters the namespaces, then
# forks a supervisor (pid 1 of the new pid namespace when there is one), which forks the program:
# limits, uid drop, exec. The supervisor reaps, reports the program's wait status on the status
# pipe and exits, which kills whatever is left in the pid namespace. SIGTERM to the bootstrap
# kills the supervisor and waits until the namespace is gone.
BOOTSTRAP = r"""
import ctypes, json, os, resource, signal, sys

cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
MS_RDONLY, MS_REMOUNT = 1, 32


def check(ret):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def die_with_parent():
    check(libc.prctl(1, signal.SIGKILL, 0, 0, 0))  # PR_SET_PDEATHSIG


def mount(source, target, fstype, flags, data=None):
    args = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    check(libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]))


def enter_namespaces():
    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(cfg["flags"]))
    if cfg["userns"]:
        maps = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1"))
        for name, text in maps:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for top, mode, keep in cfg["mounts"]:
        fds = [os.open(path, os.O_PATH) for path, _ in keep]
        mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size={cfg['tmpfs']}")
        for (path, writable), fd in zip(keep, fds):
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
            if not writable:
                read_only(path)
    if cfg["work"]:  # the run's working folder: one tmpfs, so its size bounds the whole run's files
        work, owner = cfg["work"]
        mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
              f"mode=700,size={cfg['tmpfs']},uid={owner},gid={owner}")
        os.mkdir(os.path.join(work, "tmp"), 0o700)
        os.chown(os.path.join(work, "tmp"), owner, owner)


def read_only(path):
    # Remount a bind read-only, keeping the flags a user namespace may not drop.
    flags = os.statvfs(path).f_flag
    keep = flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048)  # + noatime, nodiratime
    keep |= (1 << 21) if flags & 4096 else 0  # ST_RELATIME -> MS_RELATIME
    mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def exec_program(rpc):
    os.close(cfg["status_fd"])
    if rpc:  # the checker's pipes become the program's fds 3 (requests) and 4 (answers)
        import fcntl

        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in rpc]
        for target, fd in zip((3, 4), high):
            os.dup2(fd, target)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    drop_privileges(cfg["uid"])
    os.execv(cfg["argv"][0], cfg["argv"])


def drop_privileges(uid):
    for name, soft, hard in cfg["limits"]:
        res = getattr(resource, name)
        cap = resource.getrlimit(res)[1]
        if cap != resource.RLIM_INFINITY and os.geteuid() != 0:
            soft, hard = min(soft, cap), min(hard, cap)
        resource.setrlimit(res, (soft, hard))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.nice(10)  # the harness and supervisors stay responsive under load
    check(libc.prctl(38, 1, 0, 0, 0))  # PR_SET_NO_NEW_PRIVS


def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def start_checker():
    # Fork the checker: it takes the tests from the job descriptor, then waits for the program.
    job_fd, verdict_fd = cfg["check"]["job_fd"], cfg["check"]["verdict_fd"]
    request_r, request_w = os.pipe()
    response_r, response_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        die_with_parent()
        for fd in (request_r, response_w, ready_r, cfg["status_fd"]):
            os.close(fd)
        job = json.loads(read_all(job_fd))
        os.close(job_fd)
        os.close(ready_w)  # the program may start: the tests are in this process only
        drop_privileges(cfg["check"]["uid"])
        scope = {"__name__": "__checker__"}
        exec(compile(job.pop("source"), "<checker>", "exec"), scope)
        scope["run_checks"](job, request_w, response_r, verdict_fd)
        os._exit(0)
    for fd in (job_fd, verdict_fd, request_w, response_r, ready_w):
        os.close(fd)
    read_all(ready_r)
    os.close(ready_r)
    return pid, request_r, response_w


def supervise():
    die_with_parent()
    if cfg["flags"]:
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass  # best effort: the program then sees the host's process list
    checker, rpc = None, ()
    if cfg["check"]:
        checker, *rpc = start_checker()
    child = os.fork()
    if child == 0:
        exec_program(rpc)
    for fd in rpc:
        os.close(fd)
    report = {"program": None}
    while True:
        pid, status = os.wait()
        if pid == child:
            report["program"] = status
            if checker is None:
                break
        if pid == checker:
            if report["program"] is None:
                os.kill(child, signal.SIGKILL)  # the tests are over; the program is not needed
            break
    os.write(cfg["status_fd"], json.dumps(report).encode())
    os._exit(0)


os.umask(0o022)
if cfg["flags"]:
    enter_namespaces()
check(libc.prctl(4, 0, 0, 0, 0))  # PR_SET_DUMPABLE 0: no same-uid ptrace, /proc/PID/fd or mem
die_with_parent()  # after unshare: entering a user namespace clears it
if os.getppid() != cfg["parent"]:
    sys.exit("sandbox: harness went away")
os.chdir(cfg["cwd"])
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # until the handler can act
supervisor = os.fork()
if supervisor == 0:
    supervise()
if cfg["check"]:
    os.close(cfg["check"]["job_fd"])
    os.close(cfg["check"]["verdict_fd"])
signal.signal(signal.SIGTERM, lambda *_: os.kill(supervisor, signal.SIGKILL))
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
os.waitid(os.P_PID, supervisor, os.WEXITED | os.WNOWAIT)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # never signal a reaped pid
os.waitpid(supervisor, 0)
"""
