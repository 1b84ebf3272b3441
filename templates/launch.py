"""Flex template entry file (``FLEX_TEMPLATE_PYTHON_PY_FILE``): the launcher logic is ``pipelines.flex_template``.

A separate file because the launcher runs it as a script: its directory goes first on ``sys.path``, and this
directory holds no Python modules that could shadow installed ones (``pipelines/`` would expose ``options``,
``graph``, ... as top-level names).
"""

import sys

from pipelines.flex_template import main

if __name__ == "__main__":
    sys.exit(main())
