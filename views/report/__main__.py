"""`python -m views.report RUN_DIR`: write a run's tree.html and report/report.md."""

import sys

from views.report import main

sys.exit(main())
