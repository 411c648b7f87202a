from gencore.cli import main

raise SystemExit(main())
