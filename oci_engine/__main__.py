import sys

from oci_engine.cli import main

sys.exit(main())
