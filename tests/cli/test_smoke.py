def test_version(dps):
    run = dps.ok("--version")
    assert run.stdout.startswith("dpsctl ")
