"""`python -m kiosk_host.emulator`: the same as `kiosk-bridge emulate`."""

import sys

from .cli import main

sys.exit(main())
