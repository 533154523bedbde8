"""The self-tests see the fixed catalogue only: a corpus of found cases lying in the current folder
(or named by SOFTMAX_SUITE_CORPUS) would add cases to the counts and loops they check.

The catalogue reads its corpus at first use (softmax_suite.suites.cases), which comes after this conftest is
imported (the suite's plugin reads it in pytest_configure); subprocesses and pytest-xdist workers
inherit the setting. Tests of the corpus itself set the variable for their own subprocesses.
"""

import os

from softmax_suite.suites.corpus import ENVIRONMENT_VARIABLE

os.environ[ENVIRONMENT_VARIABLE] = "off"
