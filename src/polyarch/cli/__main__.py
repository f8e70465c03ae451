from polyarch.cli import main

raise SystemExit(main())
