"""`python -m honly_spec.cli ...` is `honly ...`."""

import sys

from honly_spec.cli import main

sys.exit(main())
