"""`python -m hotstage` is the `hotstage` command."""
from hotstage.acquisition.cli import main

raise SystemExit(main())
