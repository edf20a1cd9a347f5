"""The sandbox against code that tries: each attack class, each with a positive control.

A control runs the same probe without the defence (plain bwrap as it was configured before, or
no sandbox) and shows the attack would work, so every test here can fail. These tests need
root (the CI machine and most GPU boxes run labls as root); as a user the run's uid is the
user's own and the outside observers are not set up (`tests/unit/test_isolation.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from labls.sandbox import isolation
from labls.sandbox.records import RunRecord

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the hardened root path needs root")

PROBE_PRIVILEGE = """
    import ctypes, os
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        print(f"{key}:", int(status[key].strip(), 16))
    print("NoNewPrivs:", status["NoNewPrivs"].strip())
    print("Seccomp:", status["Seccomp"].strip())
    print("uid:", os.getuid())
    libc = ctypes.CDLL(None, use_errno=True)
    def attempt(name, rc):
        print(f"{name}_ok:", int(rc == 0))
    attempt("umount", libc.umount2(b"/tmp", 2))
    attempt("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
    attempt("remount", libc.mount(None, b"/", None, 0x20 | 0x1000, None))  # MS_REMOUNT|BIND
    try:  # the namespace of the sandbox's pid 1 (in the control: the host's)
        fd = os.open("/proc/1/ns/net", os.O_RDONLY)
    except PermissionError:
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    attempt("setns", libc.setns(fd, 0x40000000))
    attempt("unshare_user", libc.unshare(0x10000000))
    attempt("unshare_mount", libc.unshare(0x00020000))
    print("done: 1")
"""


def _bare_bwrap(script: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The control: the probe in bwrap as labls configured it before (root, whole `/`
    read-only), without dropping privilege."""
    keep = [str(script), *map(str, isolation.interpreter_roots(sys.executable))]
    binds = [arg for path in keep for arg in ("--ro-bind", path, path)]  # over the /tmp tmpfs
    return subprocess.run(
        ["bwrap", "--unshare-pid", "--unshare-net", "--die-with-parent", "--ro-bind", "/", "/",
         "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", *binds, *extra,
         sys.executable, str(script)],
        capture_output=True, text=True, timeout=60, check=False)


def _metrics(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_a_run_holds_no_privilege(lab, tmp_path: Path) -> None:
    record = lab.run(PROBE_PRIVILEGE)
    assert record.state == "succeeded", record.log_tail
    m = record.metrics
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert m[key] == 0, key
    assert m["NoNewPrivs"] == 1 and m["Seccomp"] == 2
    assert m["uid"] >= isolation.RUN_UID_BASE
    for name in ("umount", "mount", "remount", "setns", "unshare_user", "unshare_mount"):
        assert m[f"{name}_ok"] == 0, name
    assert record.sandbox["hardened"] and record.sandbox["seccomp"]
    assert record.sandbox["uid"] == m["uid"]
    # control: the same probe in the old sandbox shape is root with every capability
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PROBE_PRIVILEGE))
    done = _bare_bwrap(probe)
    control = _metrics(done.stdout)
    assert "CapEff" in control, done.stderr
    assert int(control["CapEff"]) != 0 and control["uid"] == "0"
    assert control["umount_ok"] == "1" and control["unshare_mount_ok"] == "1"


def test_root_only_files_are_unreadable_and_host_secrets_absent(lab, tmp_path: Path) -> None:
    secret = lab.root / "MNIST" / "root-only.txt"  # inside a folder the run does see
    secret.write_text("the host's secret\n")
    secret.chmod(0o600)
    source = f"""
        import os
        try:
            print("secret_read:", int("secret" in open({str(secret)!r}).read()))
        except PermissionError:
            print("secret_read: 0")
        print("shadow_visible:", int(os.path.exists("/etc/shadow")))
        print("ssh_visible:", int(os.path.exists("/etc/ssh")))
    """
    record = lab.run(source)
    assert record.metrics == {"secret_read": 0, "shadow_visible": 0, "ssh_visible": 0}
    control = lab.run(source, isolation="none", network="host")
    assert control.metrics["secret_read"] == 1 and control.metrics["shadow_visible"] == 1


def test_the_run_sees_only_the_allow_list(lab) -> None:
    record = lab.run(f"""
        import json, os
        print("ROOT " + json.dumps(sorted(os.listdir("/"))))
        print("ETC " + json.dumps(sorted(os.listdir("/etc"))))
        print("SYS " + json.dumps(sorted(os.listdir("/sys"))))
        print("net_listed:", int(os.path.exists("/sys/class/net")))
        for path in ("/run", "/var", "/srv", "/mnt", "/media", "/opt", "/home", "/boot",
                     "/root/.bashrc", {str(lab.ws / "exp.py")!r},
                     {str(lab.ws / ".labls" / "labls.db")!r}):
            print(path.strip("/").replace("/", "_") + "_visible:", int(os.path.exists(path)))
        # the run's folders are bound at their own paths; their parents are empty
        print("ws_entries:", len(os.listdir({str(lab.ws)!r})))
    """)
    assert record.state == "succeeded", record.log_tail
    lines = {ln.split(" ", 1)[0]: json.loads(ln.split(" ", 1)[1])
             for ln in record.log_tail.splitlines() if ln.startswith(("ROOT ", "ETC ", "SYS "))}
    allowed_top = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "sys",
                   "tmp", "usr"}
    own = {Path(p).parts[1] for p in (sys.prefix, os.path.realpath(sys.executable),
                                      str(lab.root), str(lab.ws))}
    assert set(lines["ROOT"]) <= allowed_top | own, lines["ROOT"]
    assert "opt" not in lines["ROOT"] or str(lab.root).startswith("/opt")
    assert {"passwd", "group", "hosts", "resolv.conf"} <= set(lines["ETC"])
    assert set(lines["ETC"]) <= set(isolation.ETC_ALLOWED) | {"passwd", "group", "hosts",
                                                               "hostname", "resolv.conf"}
    assert lines["SYS"] == ["devices"]
    visible = {k: v for k, v in record.metrics.items() if k.endswith("_visible")}
    assert visible and not any(visible.values()), visible
    assert record.metrics["net_listed"] == 0
    assert record.metrics["ws_entries"] == 1  # `.labls` alone, holding the run's own folders


def test_a_host_unix_socket_is_out_of_reach(lab, tmp_path: Path) -> None:
    path = Path("/var/tmp") / f"labls-test-{os.getpid()}.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        try:
            source = f"""
                import socket
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect({str(path)!r})
                    print("connected: 1")
                except OSError:
                    print("connected: 0")
            """
            record = lab.run(source)
            control = lab.run(source, isolation="none", network="host")
        finally:
            path.unlink()
    assert record.metrics["connected"] == 0
    assert control.metrics["connected"] == 1


def _fifo_blocks(path: Path) -> bool:
    """Control: a plain open of this FIFO, as a naive reader does it, does not return."""
    opened = threading.Event()

    def naive() -> None:
        with open(path, "rb"):
            opened.set()

    thread = threading.Thread(target=naive, daemon=True)
    thread.start()
    blocked = not opened.wait(0.5)
    with open(path, "wb"):  # let the naive reader go
        pass
    thread.join(5)
    return blocked


def test_run_files_replaced_by_fifos_and_device_links_cost_only_that_input(lab) -> None:
    record = lab.run("""
        import os, json
        probe = os.environ["LABLS_PROBE_DIR"]
        for name in ("events.jsonl", "stack.txt"):
            path = os.path.join(probe, name)
            if os.path.exists(path):
                os.unlink(path)
            os.mkfifo(path)
        if os.path.exists(os.environ["LABLS_METRICS"]):
            os.unlink(os.environ["LABLS_METRICS"])
        os.symlink("/dev/zero", os.environ["LABLS_METRICS"])
        os.mkfifo("results.json")
        print("val_bpb: 0.5")
    """, timeout=20)
    assert record.state == "succeeded", (record.error, record.log_tail)
    assert record.metrics["val_bpb"] == 0.5
    refused = {w["file"] for w in record.warnings}
    assert {"probe/events.jsonl", "probe/metrics.jsonl", "work/results.json"} <= refused
    assert all(w["code"] == "hostile-input" for w in record.warnings)
    work = Path(record.log_path).parent / "work"
    assert stat.S_ISFIFO(os.lstat(work / "results.json").st_mode)
    assert _fifo_blocks(work / "results.json")


def test_garbage_and_deep_json_cost_one_line(lab) -> None:
    record = lab.run("""
        import os
        with open(os.path.join(os.environ["LABLS_PROBE_DIR"], "events.jsonl"), "a") as f:
            f.write("5\\n[1, 2]\\n\\"x\\"\\n{bad json\\n" + "[" * 100000 + "\\n")
        print('PER_SEED ' + '{"a":' * 3000 + '1' + '}' * 3000)
        print('PER_SEED ' + '[' * 100000)
        with open("results.json", "w") as f:
            f.write('{"metrics": ' * 100000)
        print("val_bpb: 0.25")
        print("PER_SEED condition=bn seed=0 accuracy: 0.9")
    """)
    assert record.state == "succeeded", (record.error, record.log_tail)
    assert record.metrics["val_bpb"] == 0.25
    assert record.metrics["bn/0/accuracy"] == 0.9  # the follower lived past the deep lines
    assert any(w["file"] == "work/results.json" for w in record.warnings)


def test_forged_probe_lines_do_not_verify_a_dataset(lab) -> None:
    target = lab.root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    forged = lab.run(f"""
        import json, os
        with open(os.path.join(os.environ["LABLS_PROBE_DIR"], "events.jsonl"), "a") as f:
            f.write(json.dumps({{"event": "open", "path": {str(target)!r}}}) + "\\n")
        print("DATASET_USED: MNIST")
        print("val_bpb: 1.0")
    """)
    assert forged.provenance["verdict"] == "unverified"
    assert forged.provenance["claimedFilesRead"] == [str(target)]  # the claim is kept...
    assert forged.provenance["filesRead"] == []  # ...but nothing outside saw a read
    honest = lab.run(f"""
        open({str(target)!r}, "rb").read()
        print("DATASET_USED: MNIST")
        print("val_bpb: 1.0")
    """)
    assert honest.provenance["verdict"] == "verified", honest.provenance
    assert honest.provenance["filesRead"] == [str(target)]


def test_an_open_without_a_read_is_not_a_read(lab) -> None:
    target = lab.root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    record = lab.run(f"""
        open({str(target)!r}, "rb").close()
        print("DATASET_USED: MNIST")
        print("val_bpb: 1.0")
    """)
    assert record.provenance["verdict"] == "unverified"
    assert record.provenance["filesOpenedUnread"] == [str(target)]
    assert "no byte" in record.provenance["reason"]


def test_reads_through_a_symlink_and_by_cat_count(lab) -> None:
    raw = lab.root / "MNIST" / "raw"
    record = lab.run(f"""
        import os, subprocess
        os.symlink({str(raw / "train-images-idx3-ubyte")!r}, "images")
        open("images", "rb").read()
        subprocess.run(["cat", {str(raw / "t10k-images-idx3-ubyte")!r}],
                       stdout=subprocess.DEVNULL, check=True)
        print("DATASET_USED: MNIST")
        print("val_bpb: 1.0")
    """)
    assert record.provenance["verdict"] == "verified", record.provenance
    assert set(record.provenance["filesRead"]) == {str(raw / "train-images-idx3-ubyte"),
                                                   str(raw / "t10k-images-idx3-ubyte")}
    assert record.provenance["filesReadBytes"] == sum(  # the sizes of the files read
        (raw / n).stat().st_size for n in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"))
    # the run's own audit hook saw neither: a relative link and another program's read
    assert record.provenance["claimedFilesRead"] == []


def test_reading_two_datasets_while_stamping_one_is_a_mismatch(lab) -> None:
    from tests.helpers import make_cache

    make_cache(lab.root, ["CIFAR10"])
    mnist = next((lab.root / "MNIST" / "raw").iterdir())
    cifar = next(p for p in (lab.root).rglob("*") if p.is_file() and "cifar" in str(p).lower())
    record = lab.run(f"""
        open({str(mnist)!r}, "rb").read()
        open({str(cifar)!r}, "rb").read()
        print("DATASET_USED: MNIST")
        print("val_bpb: 1.0")
    """)
    assert record.provenance["verdict"] == "mismatch", record.provenance
    assert "CIFAR10" in record.provenance["reason"]


def test_a_dataset_read_past_the_listed_paths_is_still_a_mismatch(lab, monkeypatch) -> None:
    """The record lists only the first paths read; the datasets are told from all of them (a
    run reading 10^5 files of the stamped dataset first cannot hide a second one)."""
    from labls.sandbox import observe
    from tests.helpers import make_cache

    monkeypatch.setattr(observe, "MAX_PATHS", 2)
    make_cache(lab.root, ["CIFAR10"])
    mnist = sorted(p for p in (lab.root / "MNIST" / "raw").iterdir() if p.is_file())
    cifar = next(p for p in lab.root.rglob("*") if p.is_file() and "cifar" in str(p).lower())
    assert len(mnist) > 2
    record = lab.run(f"""
        for path in {[str(p) for p in mnist]!r} + [{str(cifar)!r}]:
            open(path, "rb").read()
        print("DATASET_USED: MNIST")
        print("val_bpb: 1.0")
    """)
    listed = record.provenance["filesRead"]
    assert len(listed) == 2 and str(cifar) not in listed  # what the listed paths alone show
    assert record.provenance["filesReadCount"] == len(mnist) + 1
    assert record.provenance["verdict"] == "mismatch", record.provenance
    assert record.provenance["datasetsRead"] == ["CIFAR10", "MNIST"]


def test_erasing_the_hook_file_does_not_erase_a_network_attempt(lab) -> None:
    record = lab.run("""
        import os, socket
        try:
            socket.create_connection(("203.0.113.7", 443), timeout=2)
        except OSError:
            pass
        open(os.path.join(os.environ["LABLS_PROBE_DIR"], "events.jsonl"), "w").close()
        print("val_bpb: 1.0")
    """)
    hook = [a for a in record.network_attempts if a.get("observer") != "kernel"]
    kernel = [a for a in record.network_attempts if a.get("observer") == "kernel"]
    assert hook == []  # control: the run did erase what its own hook wrote...
    assert kernel and kernel[0]["count"] >= 1  # ...but not what the kernel counted


def test_no_silent_fallback_when_bwrap_is_missing(lab, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("unshare", "git", "setpriv", "sh", "true", "env"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(isolation, "_probed", {})
    refused = lab.run('print("val_bpb: 1")\n')
    assert refused.state == "failed" and refused.error is not None
    assert "apt-get install bubblewrap" in refused.error["message"]
    assert refused.isolation == "bwrap"  # asked for, refused, never silently swapped
    weaker: RunRecord = lab.run('print("val_bpb: 1")\n', isolation="unshare")
    assert weaker.state == "succeeded" and weaker.isolation == "unshare"
    assert weaker.sandbox["hardened"] is False and "hides no files" in weaker.sandbox["warning"]


def test_no_nan_or_infinity_on_the_wire(lab) -> None:
    record = lab.run("""
        print("val_bpb: 0.5")
        print("grad_norm: inf")
        print("PER_SEED condition=bn seed=0 loss: nan")
    """)
    text = Path(record.results_path).read_text()

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the canonical results.json")

    json.loads(text, parse_constant=refuse)
    json.dumps(record.to_wire(), allow_nan=False)
    assert "grad_norm" in record.structured["nonFinite"]


def test_every_run_has_a_memory_limit_by_default(lab) -> None:
    record = lab.run('print("val_bpb: 1")\n')
    total_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    assert record.sandbox["memoryCgroup"] is True
    assert 0 < record.sandbox["memoryMb"] < total_mb


def test_the_memory_cgroup_holds_a_tree_that_rlimit_as_cannot(lab) -> None:
    """Three children of 150 MB each pass a per-process 250 MB RLIMIT_AS, but not a 250 MB
    memory cgroup over the whole run; the kill is reported as `oom`."""
    source = """
        import subprocess, sys
        child = "b = bytearray(150 * 2**20); import time; time.sleep(3); print('child: 1')"
        procs = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(3)]
        codes = [p.wait() for p in procs]
        print("killed:", sum(c < 0 for c in codes))
        sys.exit(1 if any(codes) else 0)
    """
    record = lab.run(source, memory_mb=250, timeout=60)
    assert record.state == "failed" and record.error is not None
    assert record.error["kind"] == "oom", record.error
    assert "memory limit of 250 MB" in record.error["message"]
    # control: with room for all three, the same tree runs to the end
    control = lab.run(source, memory_mb=2000, timeout=60)
    assert control.state == "succeeded", (control.error, control.log_tail)
    assert control.metrics["killed"] == 0 and control.metrics["child"] == 1


def test_a_run_that_fills_its_folder_is_stopped_at_its_quota(lab) -> None:
    source = """
        import os
        for i in range(40):                     # 40 files of 8 MB: none over the quota alone
            with open(f"chunk{i}.bin", "wb") as f:
                f.write(os.urandom(8 << 20))
            print("written_mb:", 8 * (i + 1))
        import time; time.sleep(30)
    """
    record = lab.run(source, disk_mb=64, timeout=60)
    assert record.state == "failed" and record.error is not None
    assert record.error["kind"] == "diskQuota", record.error
    # control: with a larger quota the same writes finish (and the run is then cut by time)
    control = lab.run(source.replace("time.sleep(30)", "pass"), disk_mb=1024, timeout=60)
    assert control.state == "succeeded" and control.metrics["written_mb"] == 320


def test_one_file_larger_than_the_quota_is_refused_by_the_kernel(lab) -> None:
    record = lab.run("""
        import errno
        try:
            with open("big.bin", "wb") as f:
                f.write(b"x" * (40 << 20))
        except OSError as exc:
            print("errno:", exc.errno)
    """, disk_mb=16)
    assert record.metrics["errno"] == 27  # EFBIG


def test_reads_through_mmap_count(lab) -> None:
    """numpy's memmap and torch.from_file read pages through `mmap`, which raises no
    fanotify event: the mapping, seen from outside in the run's `/proc/<pid>/maps`, counts."""
    pytest.importorskip("numpy")
    raw = lab.root / "MNIST" / "raw"
    source = f"""
        import time
        import numpy as np
        images = np.memmap({str(raw / "train-images-idx3-ubyte")!r}, dtype=np.uint8, mode="r")
        print("first_byte:", int(images[0]))
        time.sleep(1.6)  # the engine samples the maps once a second
        print("DATASET_USED: MNIST")
        print("val_bpb: 1.0")
    """
    record = lab.run(source)
    assert record.provenance["verdict"] == "verified", record.provenance
    assert record.provenance["filesRead"] == [str(raw / "train-images-idx3-ubyte")]
    assert record.provenance["filesReadBytes"] == (raw / "train-images-idx3-ubyte").stat().st_size
