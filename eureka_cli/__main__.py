from eureka_cli.main import main

raise SystemExit(main())
