"""The conformance list: the rules of the DPS reference, and the tests that show dpsctl keeps (or deliberately bends) each.

A test claims a rule with a marker naming the rule's ID from `catalogue.RULES`:

    @pytest.mark.rule("§5/one-entry-per-certificate")
    def test_ref5_a_certificate_stands_in_only_one_enrollment_entry(dps): ...

and, where dpsctl deliberately differs from the documented service, says how (docs/choices.md has the row):

    @pytest.mark.rule("§5/group-chain-reaches-verified-certificate", differs="a group's signing certificate counts as verified")

`python -m tests.conformance.generate > docs/conformance.md` writes the document; tests/test_conformance.py fails when
the document, the catalogue and the tests' markers disagree.
"""
