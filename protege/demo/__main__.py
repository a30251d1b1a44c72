"""``python -m protege.demo`` is ``protege demo``."""

from protege.cli.demo import demo

demo(prog_name="protege demo")
