"""The man page and the shell completions, generated from the argparse parser (written once).

Pure: the parser in, text out (outline walks it; man and completions write the text).
"""

from __future__ import annotations

from netspectre.docs.completions import completion
from netspectre.docs.man import manpage

__all__ = ["completion", "manpage"]
