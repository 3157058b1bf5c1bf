"""The old name of `python -m views.report RUN_DIR`, kept because it is documented and used:

    python -m graphs.report RUN_DIR

The run report itself lives in views.report.
"""

import sys

from views.report import main

if __name__ == "__main__":
    sys.exit(main())
