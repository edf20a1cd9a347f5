"""`make lint` type-checks across packages: a wrong call into another labls package fails it
(before tools/typecheck, every `labls.*` import was `Any` and such a call passed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def typecheck(planted: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "tools" / "typecheck")], env={
        "PATH": "/usr/bin:/bin", "PLANT": str(planted), "HOME": str(planted.parent)},
        capture_output=True, text=True, timeout=600)


def test_a_wrong_call_across_packages_fails_the_type_check(tmp_path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("from labls.sandbox.records import RunRecord\n\n"
                       "RECORD = RunRecord(run_id=1, state='queued', script='t.py')\n")
    done = typecheck(planted)
    assert done.returncode != 0
    assert 'labls/planted.py:3: error: Argument "run_id" to "RunRecord" has incompatible type' \
        in done.stdout, done.stdout
    # control: the same call, right, passes (so the failure above is the planted error's)
    planted.write_text(planted.read_text().replace("run_id=1", "run_id='r1'"))
    right = typecheck(planted)
    assert right.returncode == 0, right.stdout
