from archscan.cli.main import main

raise SystemExit(main())
