from certd.cli import main
import sys

sys.exit(main())
