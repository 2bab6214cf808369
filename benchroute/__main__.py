from benchroute.cli import main

raise SystemExit(main())
