import sys

from isseg.cli.main import main

sys.exit(main())
