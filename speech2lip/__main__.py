from speech2lip.cli import main

raise SystemExit(main())
