"""The CI quality gate: gate files -> figures -> checks -> reports (JSON, JUnit, Markdown, plots).

``config`` parses and checks a gate file against ``schema``; ``run`` evaluates it with the
drivers of ``cvscore.evaluate``; ``checks`` decides each threshold; ``report`` and ``plots``
write the outputs. ``cvscore gate`` (``cvscore.cli.gate``) is the command.
"""
