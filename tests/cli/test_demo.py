"""`dpsctl demo`, the README's first command: a real run, and a rerun on the same store."""

from __future__ import annotations


def test_demo_provisions_three_kinds_of_device_and_can_run_again(dps, tmp_path):
    folder = tmp_path / "demo"
    first = dps("demo", "--dir", str(folder))
    assert first.exit_code == 0, first
    assert "$ dpsctl provision --tpm" in first.stderr and "warning" in first.stderr  # commands shown, test keys flagged
    registrations = dps.json("registration", "list")
    kinds = {next(k for k in ("symmetricKey", "x509", "tpm") if k in r) for r in registrations}
    assert kinds == {"symmetricKey", "x509", "tpm"}
    assert all(r["status"] == "assigned" for r in registrations) and len(registrations) == 5
    assert (folder / "demo-root.key.pem").stat().st_mode & 0o777 == 0o600
    again = dps("demo", "--dir", str(folder))
    assert again.exit_code == 0, again
    assert len(dps.json("registration", "list")) == 5


def test_the_demo_next_steps_work_as_printed(tmp_path):
    """The commands the demo suggests run by name, in the folder the demo ran in, as a user pastes them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSCTL_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    demo = subprocess.run(["dpsctl", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    hint = demo.stderr.split("Next, try:\n", 1)[1]
    lines = [line.strip() for line in hint.replace("\\\n", " ").splitlines() if line.strip()]
    assert lines and all(line.startswith("dpsctl ") for line in lines)
    for line in lines:
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
    assert "sensor-001" in done.stdout.split()


def test_readme_quick_start_is_two_commands_and_leaves_dpsctl_on_the_path():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", quick, re.M | re.S)]
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    install, tests = commands
    # Sourced in the user's own shell, activate puts .venv/bin (and so `dpsctl`) on PATH for what follows.
    assert install.index(". .venv/bin/activate") < install.index("pip install .") < install.index("dpsctl demo")
    assert "pip install '.[test]'" in tests and tests.endswith("python -m pytest")
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    assert tests.replace("pip install", "pip install -q") + ' "$@"' in ci, "`.ci/run` must run the README's test command"
